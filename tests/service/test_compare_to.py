"""``compare_to`` over HTTP: ``POST /v1/jobs`` names a second uploaded model by id, the API
checks it as it checks ``model_id``, and the worker fetches it into the job's folder for the
sandboxed child, under the name it was uploaded as."""

from __future__ import annotations

import pytest

from infra.db.models import Model
from infra.db.session import transaction
from infra.storage import open_storage
from workers.tasks import JobRun, WorkerContext


@pytest.fixture
def models(settings, sessions, cnn_files) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The digits CNN as ONNX and as TorchScript, stored and inspected: format -> id."""
    storage = open_storage(settings.storage_url)
    ids = {}
    for fmt in ("onnx", "torchscript"):
        blob = storage.put_file(cnn_files[fmt])
        model = Model(sha256=blob.sha256, size_bytes=blob.size_bytes, status="ready",
                      name=f"uploaded {cnn_files[fmt].name}", format=fmt, input_shape=[1, 8, 8],
                      layers=[])
        with transaction(sessions) as session:
            session.add(model)
        ids[fmt] = model.id
    return ids


def _job(models: dict[str, str], **changes: object) -> dict[str, object]:
    return {"model_id": models["onnx"], "dataset": "builtin:digits", "max_samples": 200,
            "device": "cpu", "analyses": [{"kind": "similarity"}],
            "compare_to": models["torchscript"], **changes}


def test_a_job_compares_two_uploaded_models_on_the_same_samples(api, settings, models):
    created = api.post("/v1/jobs", json=_job(models))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    JobRun(WorkerContext(settings), job_id).run()
    status = api.get(f"/v1/jobs/{job_id}").json()
    assert status["status"] == "succeeded", status
    section = api.get(f"/v1/jobs/{job_id}/report").json()["analyses"]["similarity"]
    assert section["compared_to"]["name"] == "uploaded_cnn.pt"
    assert section["compared_to"]["format"] == "torchscript" and section["n_samples"] == 200
    assert min(match["cka"] for match in section["best_matches"]) >= 0.999
    image = api.get(f"/v1/jobs/{job_id}/artifacts/{section['image']}")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(("changes", "status", "needle"), [
    ({"compare_to": "nope"}, 422, "compare_to: no model 'nope' (POST /v1/models first)"),
    ({"analyses": [{"kind": "linear_probe"}]}, 422,
     "only the similarity analysis compares two models, and this job does not run it"),
    ({"compare_to": ""}, 422, "compare_to"),
])
def test_a_bad_compare_to_is_refused_before_queueing(api, models, changes, status, needle):
    refused = api.post("/v1/jobs", json=_job(models, **changes))
    assert refused.status_code == status and needle in refused.json()["detail"], refused.text
    assert api.get("/v1/jobs").json()["items"] == []


def test_a_model_not_yet_inspected_is_a_409(api, sessions, models):
    with transaction(sessions) as session:
        session.get(Model, models["torchscript"]).status = "inspecting"
    refused = api.post("/v1/jobs", json=_job(models))
    assert refused.status_code == 409
    assert refused.json()["detail"] == (f"compare_to: model '{models['torchscript']}' is "
                                        "inspecting")
