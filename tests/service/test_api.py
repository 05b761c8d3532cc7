"""The HTTP API in-process on a real SQLite database and filesystem broker (no worker runs)."""

from __future__ import annotations

import pytest

from infra.db import jobs as state
from infra.db.models import Job
from infra.queue import JOBS_QUEUE, TaskQueue
from layerlens.spec import kinds

PROBLEM = "application/problem+json"


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_unknown_routes_and_ids_are_problems(api):
    _problem(api.get("/v1/nothing"), 404)
    assert "no job" in _problem(api.get("/v1/jobs/abc"), 404)["detail"]
    _problem(api.get("/v1/models/abc"), 404)
    _problem(api.delete("/v1/jobs"), 405)


@pytest.mark.parametrize(("body", "needle"), [
    ({"dataset": "builtin:digits"}, "model_id"),
    ({"model_id": "x", "dataset": "builtin:digits", "colour": 1}, "colour"),
    ({"model_id": "x", "dataset": "builtin:digits", "max_samples": 0}, "max_samples"),
])
def test_malformed_job_bodies_are_422_naming_the_field(api, body, needle):
    assert needle in _problem(api.post("/v1/jobs", json=body), 422)["detail"]


@pytest.mark.parametrize(("change", "needle"), [
    ({"analyses": [{"kind": "projection", "method": "lda"}]}, "method"),
    ({"analyses": [{"kind": "linear_probe", "alpha": 1}]}, "alpha"),
    ({"analyses": []}, "empty"),
    ({"dataset": "builtin:mnist"}, "builtin:digits"),
    ({"dataset": "dataset:nope"}, "POST /v1/datasets"),
    ({"dataset": "file:///etc/passwd"}, "roots"),
    ({"dataset": "s3://bucket/key.npz"}, "LAYERLENS_DATASET_BUCKETS"),
    ({"dataset": "gs://bucket/key.npz"}, "unknown dataset reference"),
    ({"model_id": "missing"}, "POST /v1/models"),
])
def test_invalid_jobs_are_refused_before_queueing(api, ready_model, change, needle):
    body = {"model_id": ready_model, "dataset": "builtin:digits", **change}
    assert needle in _problem(api.post("/v1/jobs", json=body), 422)["detail"]
    assert api.get("/v1/jobs").json()["items"] == []


def test_job_creation_answers_202_with_location_and_queues_one_message(api, ready_model,
                                                                        settings):
    created = api.post("/v1/jobs", json={"model_id": ready_model, "dataset": "builtin:iris"})
    assert created.status_code == 202
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert int(created.headers["retry-after"]) > 0
    assert job["status"] == "queued" and job["progress"] == 0.0
    assert set(job["analyses"]) == set(kinds())  # every registered kind by default
    assert TaskQueue(settings).depth(JOBS_QUEUE) == 1


def test_idempotency_key_same_body_same_job_other_body_422(api, ready_model, settings):
    body = {"model_id": ready_model, "dataset": "builtin:iris",
            "analyses": [{"kind": "linear_probe"}]}
    headers = {"Idempotency-Key": "build-1234"}
    first = api.post("/v1/jobs", json=body, headers=headers)
    again = api.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = api.post("/v1/jobs", json={**body, "seed": 1}, headers=headers)
    assert "Idempotency-Key" in _problem(other, 422)["detail"]
    assert len(api.get("/v1/jobs").json()["items"]) == 1
    assert TaskQueue(settings).depth(JOBS_QUEUE) == 1


def test_cursor_pagination_visits_every_job_once_newest_first(api, ready_model):
    ids = [api.post("/v1/jobs", json={"model_id": ready_model, "dataset": "builtin:iris",
                                      "seed": seed}).json()["id"] for seed in range(7)]
    seen, cursor = [], None
    while True:
        page = api.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        body = page.json()
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    _problem(api.get("/v1/jobs", params={"cursor": "not-a-cursor"}), 400)
    _problem(api.get("/v1/jobs", params={"limit": 0}), 422)
    _problem(api.get("/v1/jobs", params={"status": "exploded"}), 422)


def test_cancel_of_a_queued_job_is_immediate_and_a_worker_then_skips_it(api, ready_model,
                                                                         sessions):
    job = api.post("/v1/jobs", json={"model_id": ready_model, "dataset": "builtin:iris"}).json()
    canceled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert state.claim(sessions, job["id"], "worker") is None
    assert "only queued or running" not in api.post(f"/v1/jobs/{job['id']}/cancel").text


def test_report_and_artifacts_of_an_unfinished_job_are_409(api, ready_model):
    job = api.post("/v1/jobs", json={"model_id": ready_model, "dataset": "builtin:iris"}).json()
    for path in ("report", "report.html", "artifacts", "artifacts/x.png"):
        assert "queued" in _problem(api.get(f"/v1/jobs/{job['id']}/{path}"), 409)["detail"]


def test_uploads_must_be_multipart_with_a_file(api):
    _problem(api.post("/v1/models", content=b"raw", headers={"content-type": "text/plain"}), 415)
    _problem(api.post("/v1/models", data={"name": "x"}, files={"other": ("a", b"1")}), 422)
    _problem(api.post("/v1/models", files={"file": ("empty.onnx", b"")}), 422)
    _problem(api.post("/v1/models", files={"file": ("m.pt", b"x")},
                      data={"input_shape": "1,-8"}), 422)
    _problem(api.post("/v1/datasets", files={"file": ("data.parquet", b"PAR1")}), 415)


def test_an_upload_over_the_limit_is_413_and_leaves_nothing_behind(tmp_path):
    from fastapi.testclient import TestClient

    from infra.db.session import upgrade
    from service.app import create_app
    from tests.service.support import embedded_settings

    settings = embedded_settings(tmp_path, max_upload_bytes=1000)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as client:
        body = _problem(client.post("/v1/models", files={"file": ("m.onnx", b"x" * 5000)}), 413)
        assert body["limit_bytes"] == 1000
        def body():  # no Content-Length: refused while the file part streams in
            yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"'
                   b"\r\n\r\n")
            for _ in range(4):
                yield b"x" * 700
            yield b"\r\n--b--\r\n"

        streamed = client.post("/v1/models", content=body(), headers={
            "content-type": "multipart/form-data; boundary=b"})
        _problem(streamed, 413)
    assert not list((tmp_path / "storage" / "blobs").rglob("*"))
    assert not list((tmp_path / "spool").glob("upload-*"))


def test_a_running_job_cancel_sets_the_flag_its_worker_reads(api, ready_model, sessions):
    job = api.post("/v1/jobs", json={"model_id": ready_model, "dataset": "builtin:iris"}).json()
    token = state.claim(sessions, job["id"], "worker")
    assert token is not None
    assert state.heartbeat(sessions, job["id"], token, progress=0.1, stage="capture",
                           analyses={}) is True
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "running"
    assert state.heartbeat(sessions, job["id"], token, progress=0.2, stage="capture",
                           analyses={}) is False
    with sessions() as session:
        assert session.get(Job, job["id"]).cancel_requested is True


def test_a_broker_that_refuses_leaves_no_job_behind_and_answers_503(tmp_path):
    from fastapi.testclient import TestClient

    from infra.db.models import Model
    from infra.db.session import make_engine, session_factory, transaction, upgrade
    from service.app import create_app
    from tests.e2e.launch import free_port
    from tests.service.support import embedded_settings

    settings = embedded_settings(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    upgrade(settings.database_url)
    model = Model(sha256="0" * 64, size_bytes=1, name="m", status="ready", format="onnx",
                  input_shape=[64], layers=[])
    with transaction(session_factory(make_engine(settings.database_url))) as session:
        session.add(model)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/jobs", json={"model_id": model.id, "dataset": "builtin:iris"},
                             headers={"Idempotency-Key": "k1"})
        assert "task queue is unavailable" in _problem(answer, 503)["detail"]
        assert answer.headers["retry-after"] == "5"
        assert client.get("/v1/jobs").json()["items"] == []
        assert _problem(client.get("/readyz"), 503)["checks"]["broker"].startswith("unavailable")
