"""A checkpoint series through the API (issue 14's Done-means test): the 12-10-7-5-4-3-2 tanh
network of Shwartz-Ziv & Tishby trained briefly on ``builtin:ib12``, five ONNX checkpoints
uploaded with ``series``/``step`` by the Python client, one job on the series, run by a real
``layerlens serve`` (API, Celery worker, sandboxed child)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from layerlens_client import Client
from tests.e2e import launch
from tests.series_nets import train_checkpoints

pytestmark = pytest.mark.slow

#: I(X;T) <= H(X) <= log2 of the 4096 patterns of ib12 (bits).
IB12_BITS = 12.0
#: The output layer's I(T;Y) gains at least this much from the first checkpoint to the last
#: (bits; measured 0.02 -> 0.87 on 1000 samples, H(Y) = 1 bit).
OUTPUT_GAIN_BITS = 0.2
#: A layer's gradient SNR at the last checkpoint is below this share of its peak.
SNR_FALL = 0.5


def test_a_series_job_reports_the_information_plane_over_training(tmp_path) -> None:
    paths = train_checkpoints(tmp_path)  # epoch_0000 ... epoch_1000.onnx
    with launch.embedded(tmp_path / "service") as service, \
            Client(service.url, api_key=service.api_key) as client, service.client() as http:
        models = [client.upload_model(path, series="ib12-tanh") for path in paths[:-1]]
        models.append(client.upload_model(paths[-1], series="ib12-tanh", step=1000,
                                          name="last.onnx"))
        assert [m.step for m in models] == [0, 20, 80, 300, 1000]
        _refusals(http, paths[0], models[0].id)
        job = client.wait(client.create_job(
            series="ib12-tanh", dataset="builtin:ib12",
            analyses=[{"kind": "linear_probe"}, {"kind": "mutual_information"},
                      {"kind": "gradient_snr"}]),
            timeout=900, progress=False)
        assert job.status == "succeeded", job.error
        assert job.series == "ib12-tanh" and job.model_id == models[-1].id
        report = client.report_json(job)
        page = http.get(f"/v1/jobs/{job.id}/report.html").text
        image = http.get(f"/v1/jobs/{job.id}/artifacts/dynamics_information_plane.png")

    dynamics = report["dynamics"]
    assert dynamics["steps"] == [0, 20, 80, 300, 1000]
    layers = dynamics["layers"]
    assert len(layers) == 11  # 6 linear, 5 tanh
    info = dynamics["mutual_information"]
    i_xt = np.array(info["I_XT"], dtype=float)
    i_ty = np.array(info["I_TY"], dtype=float)
    assert i_xt.shape == i_ty.shape == (5, 11)
    assert np.isfinite(i_xt).all() and (i_xt <= IB12_BITS + 1e-9).all()
    output = layers.index(layers[-1])
    assert i_ty[-1, output] - i_ty[0, output] > OUTPUT_GAIN_BITS, i_ty[:, output]
    assert [row["layer"] for row in info["compression"]] == layers
    for row in info["compression"]:
        assert row["peak_step"] in dynamics["steps"] and row["compressed"] in (True, False)
        assert row["drop_bits"] >= 0.0
    accuracy = np.array(dynamics["linear_probe"]["test_accuracy"], dtype=float)
    assert accuracy[-1, output] > accuracy[0, output]
    assert report["analyses"]["linear_probe"]["layers"][-1]["test_accuracy"] == accuracy[-1, -1]
    snr = dynamics["gradient_snr"]
    assert len(snr["layers"]) == 6  # the Linear layers
    ratio = np.array(snr["snr"], dtype=float)
    assert ratio.shape == (5, 6)
    # drift to diffusion: most layers' SNR peaks early and ends below half of that peak
    # (measured: every layer peaks at step 20, 1.3-1.8, and ends at 0.34-0.40)
    fell = (ratio.argmax(axis=0) < len(ratio) - 1) & (ratio[-1] < SNR_FALL * ratio.max(axis=0))
    assert fell.sum() >= 4, ratio
    assert 'id="dynamics"' in page and image.status_code == 200
    assert image.content.startswith(b"\x89PNG")


def _refusals(http: httpx.Client, path, model_id: str) -> None:
    """Series mistakes are 4xx problems: a step taken by another file, a step without a
    series, an unknown series, both or neither of model_id and series. The same file again
    at its step (a retried upload) is the same checkpoint."""
    again = http.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                      data={"series": "ib12-tanh", "step": "0"})
    assert again.status_code == 201 and again.json()["id"] == model_id
    taken = http.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                      data={"series": "ib12-tanh", "step": "20"})
    assert taken.status_code == 409 and "another checkpoint at step 20" in taken.text
    alone = http.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                      data={"step": "3"})
    assert alone.status_code == 422 and "give series too" in alone.json()["detail"]
    unknown = http.post("/v1/jobs", json={"series": "nope", "dataset": "builtin:ib12"})
    assert unknown.status_code == 404, unknown.text
    assert unknown.headers["content-type"].startswith("application/problem+json")
    both = http.post("/v1/jobs", json={"series": "ib12-tanh", "model_id": model_id,
                                       "dataset": "builtin:ib12"})
    neither = http.post("/v1/jobs", json={"dataset": "builtin:ib12"})
    for answer in (both, neither):
        assert answer.status_code == 422 and "exactly one of model_id" in answer.text
