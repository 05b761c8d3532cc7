"""A model with two inputs over HTTP: the dataset upload keeps the array named after the
second input, and a job over it feeds that array (issue 12 class 4, "Same over HTTP")."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.models.test_multi_input import W, _two_inputs
from tests.service.conftest import api, settings  # noqa: F401  (fixtures)
from tests.service.test_upload_messages import inspector
from workers.tasks import JobRun, WorkerContext

pytestmark = pytest.mark.slow  # the inspection and the job run in sandboxed children


def test_a_job_feeds_the_uploaded_datasets_other_input(api, settings, tmp_path):  # noqa: F811
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    extra = rng.standard_normal((40, 4)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=np.arange(40) % 2, extra=extra)
    with inspector(settings):
        model = api.post("/v1/models", files={
            "file": ("two.onnx", _two_inputs(tmp_path / "two.onnx").read_bytes())})
        assert model.status_code == 201, model.text
        assert [layer["name"] for layer in model.json()["layers"]] == ["add"]
        dataset = api.post("/v1/datasets", files={"file": ("two.npz", buffer.getvalue())})
        assert dataset.status_code == 201, dataset.text
    created = api.post("/v1/jobs", json={
        "model_id": model.json()["id"], "dataset": dataset.json()["ref"], "device": "cpu",
        "analyses": [{"kind": "linear_probe"}]})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    JobRun(WorkerContext(settings), job_id).run()
    status = api.get(f"/v1/jobs/{job_id}").json()
    assert status["status"] == "succeeded", status
    (layer,) = api.get(f"/v1/jobs/{job_id}/report").json()["activations"]["layers"]
    expected = x + W * extra  # its std is 2.34; without 'extra' it would be x's, 0.96
    assert abs(layer["mean"] - float(expected.mean())) < 1e-5
    assert abs(layer["std"] - float(expected.std())) < 1e-4
