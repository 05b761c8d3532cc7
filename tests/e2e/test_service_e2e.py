"""End to end with real processes: uvicorn, Celery workers, child analysis processes.

Two deployments run the same tests:
- embedded: ``layerlens serve`` on SQLite, the filesystem broker and a local folder;
- production-like: ``layerlens migrate``, ``api`` and ``worker`` processes on this machine's
  PostgreSQL and Redis, with artifacts in an S3-compatible server (moto's, as MinIO has
  no pip package).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from layerlens_client.cli import main as layerlens_cli
from tests.e2e import launch

pytestmark = pytest.mark.slow

ANALYSES = [{"kind": "linear_probe"},
            {"kind": "projection", "method": "tsne"},
            {"kind": "mutual_information"},
            {"kind": "activation_maximization", "steps": 32}]
MAX_SAMPLES = 300
#: Job options beyond the defaults, the same over HTTP and as ``layerlens analyze`` flags:
#: digits pixels (0..16) normalised, and a batch size the capture must honour.
OPTIONS = {"max_samples": MAX_SAMPLES, "mean": [4.88], "std": [6.02], "batch_size": 64}
#: Reports from the service and from ``layerlens analyze`` agree to this relative tolerance
#: (same code and seed; thread scheduling may reorder float sums in t-SNE).
REPORT_RTOL = 1e-6


def _require(reason: str | None) -> None:
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, str]]:
    import boto3

    with launch.moto_s3() as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="layerlens")
        yield {"storage_url": "s3://layerlens/e2e", "s3_endpoint_url": endpoint}


@pytest.fixture(scope="module", params=["embedded", "production"])
def service(request, tmp_path_factory) -> Iterator[launch.Service]:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        with launch.embedded(root) as running:
            yield running
        return
    _require(launch.postgres_available())
    _require(launch.redis_available())
    storage = request.getfixturevalue("s3_server")
    with (launch.fresh_postgres_database() as database, launch.fresh_redis_db() as broker,
          launch.production(root, database, broker, **storage) as running):
        yield running


@pytest.fixture(scope="module")
def client(service) -> Iterator[httpx.Client]:
    with service.client() as http:
        yield http


@pytest.fixture(scope="module")
def uploaded(client, cnn_files) -> dict[str, dict]:
    models = {}
    for fmt, path in cnn_files.items():
        answer = client.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                             data={"input_shape": "1,8,8", "name": f"cnn-{fmt}"})
        assert answer.status_code == 201, answer.text
        models[fmt] = answer.json()
    return models


@pytest.fixture(scope="module")
def finished(client, uploaded) -> dict[str, dict]:
    """One job per format with all four analyses, polled to the end."""
    ids = {}
    for fmt, model in uploaded.items():
        created = client.post("/v1/jobs", json={"model_id": model["id"],
                                                "dataset": "builtin:digits",
                                                "analyses": ANALYSES, **OPTIONS})
        assert created.status_code == 202, created.text
        ids[fmt] = created.json()["id"]
    return {fmt: launch.wait_for_job(client, job_id) for fmt, job_id in ids.items()}


def test_uploads_answer_with_format_layers_and_content_address(uploaded, cnn_files, client):
    for fmt, model in uploaded.items():
        assert model["format"] == fmt
        assert model["sha256"] == hashlib.sha256(cnn_files[fmt].read_bytes()).hexdigest()
        assert model["input_shape"] == [1, 8, 8]
        assert len(model["layers"]) >= 8
        assert all(layer["name"] and layer["shape"] for layer in model["layers"])
    again = client.post("/v1/models", files={"file": ("copy.onnx",
                                                      cnn_files["onnx"].read_bytes())})
    assert again.status_code == 201
    assert again.json()["sha256"] == uploaded["onnx"]["sha256"]
    assert again.json()["id"] != uploaded["onnx"]["id"]


def test_identical_bytes_are_stored_once(uploaded, service, client):
    url = service.env.get("LAYERLENS_STORAGE_URL", (service.data_dir / "storage").as_uri())
    if url.startswith("file://"):
        blobs = [p.name for p in Path(url.removeprefix("file://")).rglob("*") if p.is_file()]
    else:
        import boto3

        s3 = boto3.client("s3", endpoint_url=service.env["LAYERLENS_S3_ENDPOINT_URL"])
        listing = s3.list_objects_v2(Bucket="layerlens", Prefix="e2e/blobs/")
        blobs = [item["Key"].rsplit("/", 1)[-1] for item in listing.get("Contents", [])]
    assert blobs.count(uploaded["onnx"]["sha256"]) == 1


def test_a_file_that_is_no_model_is_refused_with_the_reason(client):
    answer = client.post("/v1/models", files={"file": ("model.onnx", b"\x08\x07not a model")})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert "ONNX" in answer.json()["detail"] or "model" in answer.json()["detail"]


def test_a_dataset_upload_reports_its_shape_and_runs_in_a_job(client, uploaded, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 64)).astype(np.float32), np.arange(120) % 3
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    answer = client.post("/v1/datasets",
                         files={"file": ("blobs.npz", (tmp_path / "blobs.npz").read_bytes())})
    assert answer.status_code == 201, answer.text
    dataset = answer.json()
    assert (dataset["n_samples"], dataset["x_shape"], dataset["n_classes"]) == (120, [120, 64], 3)
    job = client.post("/v1/jobs", json={"model_id": uploaded["onnx"]["id"],
                                        "dataset": dataset["ref"],
                                        "analyses": [{"kind": "linear_probe"}]}).json()
    done = launch.wait_for_job(client, job["id"], timeout_s=300)
    assert done["status"] == "succeeded", done
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["dataset"]["ref"] == dataset["ref"]
    assert report["dataset"]["n_samples"] == 120


def test_a_failed_analysis_fails_the_job_and_the_report_keeps_the_others(client, uploaded):
    """projection's k is too large for 40 samples, which is known only once they are drawn."""
    job = client.post("/v1/jobs", json={
        "model_id": uploaded["torchscript"]["id"], "dataset": "builtin:digits",
        "max_samples": 40, "analyses": [{"kind": "linear_probe"},
                                        {"kind": "projection", "k": 25}]}).json()
    done = launch.wait_for_job(client, job["id"], timeout_s=300)
    assert (done["status"], done["reason"]) == ("failed", "invalid_input"), done
    assert "projection.k must be below half the number of points (40)" in done["error"]
    assert {kind: state["state"] for kind, state in done["analyses"].items()} == {
        "linear_probe": "succeeded", "projection": "failed"}
    report = client.get(f"/v1/jobs/{job['id']}/report")
    assert report.status_code == 200, report.text
    sections = report.json()["analyses"]
    assert sections["projection"]["error_type"] == "invalid_input"
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in sections["linear_probe"]["layers"])
    page = client.get(f"/v1/jobs/{job['id']}/report.html")
    assert page.status_code == 200 and "This analysis failed" in page.text


def test_jobs_succeed_with_every_analysis_state_and_progress(finished):
    for job in finished.values():
        assert job["status"] == "succeeded", job
        assert job["progress"] == 1.0 and job["error"] is None
        assert {kind: state["state"] for kind, state in job["analyses"].items()} == {
            entry["kind"]: "succeeded" for entry in ANALYSES}
        assert all(state["duration_s"] > 0 for state in job["analyses"].values())


def _close(a: object, b: object, path: str = "") -> list[str]:
    """Paths where two JSON documents differ beyond :data:`REPORT_RTOL`."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        return [] if math.isclose(a, b, rel_tol=REPORT_RTOL, abs_tol=1e-9) else [
            f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.fixture(scope="session")
def cli_reports(cnn_files, tmp_path_factory) -> dict[str, dict]:
    """What ``layerlens analyze`` writes for the same model files, dataset, spec and options,
    given as flags."""
    folder = tmp_path_factory.mktemp("cli-reports")
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"analyses": ANALYSES}))
    flags = ["--max-samples", str(MAX_SAMPLES), "--mean", "4.88", "--std", "6.02",
             "--batch-size", "64", "--input-shape", "1,8,8", "--device", "cpu"]
    reports = {}
    for fmt, path in cnn_files.items():
        status = layerlens_cli(["analyze", str(path), "--dataset", "builtin:digits",
                                "--spec", str(spec), *flags, "--out", str(folder / fmt)])
        assert status == 0
        reports[fmt] = json.loads((folder / fmt / "report.json").read_text())
    return reports


def test_the_report_equals_what_layerlens_analyze_writes(finished, client, cli_reports):
    for fmt, job in finished.items():
        served = client.get(f"/v1/jobs/{job['id']}/report").json()
        assert served["activations"]["batch_size"] == OPTIONS["batch_size"]
        assert (served["model"]["input_mean"], served["model"]["input_std"]) == (
            OPTIONS["mean"], OPTIONS["std"])
        differences = _close(served, cli_reports[fmt])
        assert not differences, differences[:10]


def _images(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image", "grid") and isinstance(value, str):
                yield value
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item)


def test_every_png_of_the_report_is_served_with_type_and_etag(finished, client):
    for job in finished.values():
        base = f"/v1/jobs/{job['id']}"
        report = client.get(f"{base}/report").json()
        names = set(_images(report))
        assert len(names) >= 10
        listed = {a["name"]: a for a in client.get(f"{base}/artifacts").json()}
        assert names <= set(listed)
        for name in sorted(names):
            answer = client.get(f"{base}/artifacts/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["content-type"] == "image/png"
            assert answer.content.startswith(b"\x89PNG\r\n\x1a\n")
            digest = hashlib.sha256(answer.content).hexdigest()
            assert answer.headers["etag"] == f'"{digest}"' == f'"{listed[name]["sha256"]}"'
        cached = client.get(f"{base}/artifacts/{name}",
                            headers={"If-None-Match": answer.headers["etag"]})
        assert cached.status_code == 304
        page = client.get(f"{base}/report.html")
        assert page.headers["content-type"].startswith("text/html")
        assert f'<base href="{base}/artifacts/">' in page.text
        assert client.get(f"{base}/artifacts/nope.png").status_code == 404


def test_cancel_of_a_running_job_reaches_canceled_within_10_s(client, uploaded, finished):
    created = client.post("/v1/jobs", json={"model_id": uploaded["torchscript"]["id"],
                                            "dataset": "builtin:digits"}).json()
    launch.wait_for_job(client, created["id"], timeout_s=120,
                        until=frozenset({"running", "succeeded", "failed"}))
    time.sleep(3)  # let it get into the analyses
    asked = time.monotonic()
    assert client.post(f"/v1/jobs/{created['id']}/cancel").status_code == 202
    job = launch.wait_for_job(client, created["id"], timeout_s=30)
    elapsed = time.monotonic() - asked
    assert job["status"] == "canceled", job
    assert elapsed < 10.0, f"cancel took {elapsed:.1f} s"
    again = client.post(f"/v1/jobs/{created['id']}/cancel")
    assert again.status_code == 202 and again.json()["status"] == "canceled"


def test_metrics_count_jobs_durations_and_queue_depth(finished, client):
    text = client.get("/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line and not line.startswith("#")}
    assert values['layerlens_jobs{state="succeeded"}'] >= 2
    for entry in ANALYSES:
        assert values[f'layerlens_analysis_duration_seconds_count{{kind="{entry["kind"]}"}}'] >= 2
    assert values['layerlens_queue_depth{queue="jobs"}'] == 0


def test_listing_pages_through_models_and_jobs(client, finished):
    jobs = client.get("/v1/jobs", params={"limit": 1}).json()
    assert len(jobs["items"]) == 1 and jobs["next_cursor"]
    second = client.get("/v1/jobs", params={"limit": 1, "cursor": jobs["next_cursor"]}).json()
    assert second["items"][0]["id"] != jobs["items"][0]["id"]
    succeeded = client.get("/v1/jobs", params={"status": "succeeded"}).json()["items"]
    assert {j["id"] for j in finished.values()} <= {j["id"] for j in succeeded}
    assert len(client.get("/v1/models").json()["items"]) >= 2
