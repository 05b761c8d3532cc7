"""Schemathesis against the API's own OpenAPI schema, in-process, on SQLite and PostgreSQL.

Every operation the schema lists gets generated requests, valid and invalid, sent with a real
API key (requests without a key are generated too, and a request that succeeds is sent again
without a key and with a wrong one: those must be 401). No answer may be a server error, and
each one's status code, content type, headers and body must be ones the schema documents for
that operation. Half of the ids sent name rows this tenant (or another one) really has, in
every state, so success answers are checked too, not only 404s.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.db import jobs as state
from infra.db.models import Dataset, Job, Model
from infra.db.session import make_engine, session_factory, transaction, upgrade
from infra.storage import open_storage
from service.app import create_app
from service.auth import create_key
from tests.e2e import reliability
from tests.e2e.launch import fresh_postgres_database, postgres_available, require
from tests.service.support import embedded_settings

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
UPLOADS = ("POST /v1/models", "POST /v1/datasets")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8"
       b"\xa9\x8b\x00\x00\x00\x00IEND\xaeB`\x82")


def errors_are_problems(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                        case: schemathesis.Case) -> None:
    """Every error is a problem document whose ``status`` is the HTTP status; the only 5xx is
    an upload's deliberate 503 (no worker runs here to inspect the file), naming what it
    stored and when to come back."""
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0] == PROBLEM, response.headers
    problem = response.json()
    assert problem["status"] == response.status_code and problem["detail"], problem
    if response.status_code >= 500:
        assert case.operation.label in UPLOADS and response.status_code == 503, problem
        assert "no worker inspected" in problem["detail"], problem
        assert set(problem) & {"model_id", "dataset_id"}, problem
        assert int(response.headers["retry-after"][0]) > 0


TALLY: Counter[str] = Counter()


def tally(ctx: schemathesis.CheckContext, response: schemathesis.Response,
          case: schemathesis.Case) -> None:
    """Counts requests and 5xx answers (other than the upload's 503) for make reliability."""
    TALLY["requests"] += 1
    TALLY["5xx"] += response.status_code >= 500 and not (
        case.operation.label in UPLOADS and response.status_code == 503)


@pytest.fixture(scope="module", autouse=True)
def _record() -> Iterator[None]:
    yield
    reliability.record("hostile HTTP requests (Schemathesis and hand-made)", injected=0,
                       submitted=0, lost=0, twice=0, hostile=TALLY["requests"],
                       server_errors=TALLY["5xx"])


CHECKS = [tally, not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, ignored_auth,
          errors_are_problems]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'layerlens.db'}"
        return
    require(postgres_available())
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> dict[str, Any]:
    """A migrated deployment, an API key of the tenant ``fuzz``, and rows of that tenant in
    every state (and of another tenant), as workers leave them."""
    # Uploads wait for an inspection verdict that never comes here: give up (503) at once.
    settings = embedded_settings(tmp_path, database_url=database_url, auth_required=True,
                                 inspect_timeout_s=0.01)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    key = create_key(sessions, "fuzz")
    storage = open_storage(settings.storage_url)
    files = {"report.html": b"<html><head></head><body>report</body></html>",
             "linear_probe.png": PNG}
    blobs = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        blobs[name] = storage.put_file(tmp_path / name)

    def model(tenant: str, status: str) -> Model:
        return Model(tenant=tenant, sha256="0" * 64, size_bytes=1, name="m.onnx", status=status,
                     format="onnx" if status == "ready" else None, input_shape=[4],
                     layers=[{"name": "fc", "shape": [3], "op": "Gemm"}])

    models = [model("fuzz", "ready"), model("fuzz", "inspecting"), model("other", "ready")]
    datasets = [Dataset(tenant=tenant, sha256="1" * 64, size_bytes=1, name="d.npz",
                        file_format="npz", status=status, n_samples=3, x_shape=[3, 4],
                        n_classes=2)
                for tenant, status in (("fuzz", "ready"), ("fuzz", "inspecting"),
                                       ("other", "ready"))]
    with transaction(sessions) as session:
        session.add_all([*models, *datasets])
    spec = {"model_id": models[0].id, "dataset": "builtin:iris", "seed": 0,
            "analyses": [{"kind": "linear_probe"}]}
    jobs = [Job(tenant=tenant, model_id=models[0].id, dataset_ref="builtin:iris", request=spec,
                request_sha256="2" * 64, analyses={"linear_probe": {"state": "pending"}})
            for tenant in ("fuzz",) * 5 + ("other",)]
    with transaction(sessions) as session:
        session.add_all(jobs)
    _queued, running, succeeded, failed, canceled, _other = (job.id for job in jobs)
    for job_id in (running, succeeded, failed):
        token = state.claim(sessions, job_id, "fuzz-worker")
        assert token is not None
        if job_id == succeeded:
            assert state.store_report(
                sessions, job_id, token, header={"model": {"sha256": "0" * 64}},
                sections={"linear_probe": {"layers": [{"layer": "fc", "train_accuracy": 1.0,
                                                       "test_accuracy": 0.5}]}},
                durations={"linear_probe": 0.1},
                analyses={"linear_probe": {"state": "succeeded", "duration_s": 0.1}},
                artifacts=[(name, blob.sha256, "image/png" if name.endswith(".png")
                            else "text/html; charset=utf-8", blob.size_bytes)
                           for name, blob in blobs.items()])
        if job_id == failed:
            with transaction(sessions) as session:
                assert state.finish(session, job_id, token, "failed", error="bad input",
                                    reason="invalid_input")
    state.request_cancel(sessions, canceled)
    engine.dispose()
    return {"settings": settings, "key": key.key, "model": models[0].id,
            "succeeded": succeeded,
            "ids": {"job": [job.id for job in jobs], "model": [row.id for row in models],
                    "dataset": [row.id for row in datasets],
                    "artifact": [*files, "missing.png"],
                    "dataset_ref": ["builtin:iris", f"dataset:{datasets[0].id}"]}}


@pytest.fixture
def api_schema(world: dict[str, Any], request: pytest.FixtureRequest) -> schemathesis.BaseSchema:
    # schemathesis 4.32 reads Node._nodeid, which pytest 9.2 no longer has (it is str(node.id))
    request.node._nodeid = request.node.nodeid

    def known(dictionary: str) -> dict[str, Any]:
        return {"dictionary": dictionary, "probability": 0.5}

    config = schemathesis.Config.from_dict({
        "auth": {"openapi": {"HTTPBearer": {"bearer": world["key"]}}},
        "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
        "dictionaries": {name: {"values": values} for name, values in world["ids"].items()},
        "parameters": {"path.job_id": known("job"), "path.model_id": known("model"),
                       "path.dataset_id": known("dataset"), "path.name": known("artifact"),
                       "body.model_id": known("model"), "body.dataset": known("dataset_ref")},
        "operations": [{
            # The upload's 503 is documented, and errors_are_problems pins it down.
            "include-name": list(UPLOADS),
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
        }],
    })
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(world["settings"]),
                                          config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_the_api_answers_as_its_openapi_schema_says(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


def _cursor(stamp: str, item_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([stamp, item_id]).encode()).decode()


# Text the generator does not produce: NUL (PostgreSQL text cannot hold it), unpaired
# surrogates (JSON can spell them, UTF-8 cannot encode them), NaN and Infinity (Python's JSON
# reader takes them; a JSON column cannot store them). Each once reached the database or the
# filesystem: a 500 (on PostgreSQL, or on both), or a job no worker could run.
HOSTILE = [
    ("GET /v1/models/{model_id}", {"path_parameters": {"model_id": "\x00"}}, 404),
    ("GET /v1/jobs/{job_id}", {"path_parameters": {"job_id": "\x00"}}, 404),
    ("POST /v1/jobs/{job_id}/cancel", {"path_parameters": {"job_id": "a\x00"}}, 404),
    ("GET /v1/jobs/{job_id}/artifacts/{name}",
     {"path_parameters": {"job_id": "{succeeded}", "name": "\x00.png"}}, 404),
    ("GET /v1/jobs", {"query": {"cursor": _cursor("2020-01-01T00:00:00", "\x00")}}, 400),
    ("POST /v1/jobs", {"body": {"model_id": "\x00", "dataset": "builtin:iris"}}, 422),
    ("POST /v1/jobs", {"body": {"model_id": "\ud800", "dataset": "builtin:iris"}}, 422),
    ("POST /v1/jobs", {"body": {"model_id": "{model}", "dataset": "dataset:\x00"}}, 422),
    ("POST /v1/jobs", {"body": {"model_id": "{model}", "dataset": "file:///d/\x00.npz"}}, 422),
    ("POST /v1/jobs", {"body": {"model_id": "{model}", "dataset": "builtin:iris",
                                "layers": ["fc\x00"]}}, 422),
    ("POST /v1/jobs", {"body": b'{"model_id": "{model}", "dataset": "builtin:iris", "analyses": '
                               b'[{"kind": "mutual_information", "bin_range": [NaN, Infinity]}]}',
                       "media_type": "application/json"}, 422),
    ("POST /v1/models", {"body": {"file": b"onnx?", "name": "m\x00.onnx"},
                         "media_type": "multipart/form-data"}, 422),
]


@pytest.mark.parametrize(("label", "request_parts", "status"), HOSTILE,
                         ids=[f"{label}-{index}" for index, (label, *_) in enumerate(HOSTILE)])
def test_text_no_database_can_hold_is_refused_as_documented(
        world: dict[str, Any], label: str, request_parts: dict[str, Any], status: int) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", create_app(world["settings"]))
    operation = api.find_operation_by_label(label)
    assert operation is not None, label
    case = operation.Case(headers={"Authorization": f"Bearer {world['key']}"},
                          **_filled(request_parts, world))
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == status, response.text


def _filled(value: Any, world: dict[str, Any]) -> Any:
    """``value`` with ``{model}`` and ``{succeeded}`` replaced by the world's ids."""
    if isinstance(value, str) and value in ("{model}", "{succeeded}"):
        return world[value.strip("{}")]
    if isinstance(value, bytes):
        return value.replace(b"{model}", world["model"].encode())
    if isinstance(value, dict):
        return {key: _filled(item, world) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, world) for item in value]
    return value
