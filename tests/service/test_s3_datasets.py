"""``s3://bucket/key`` dataset references, against an S3-compatible server (moto's, as in the
production-like end-to-end tests): the API checks them (allowed bucket or prefix, .npz/.csv,
the object exists), a worker downloads the object into the job's folder before the
sandboxed child runs, and ``layerlens analyze`` downloads it too."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from infra.config import Settings, dataset_buckets
from infra.db.models import Job, Model
from infra.db.session import transaction, upgrade
from infra.s3_datasets import S3DatasetError, check_allowed, parse_ref
from infra.storage import open_storage
from layerlens_client.cli import main as layerlens_cli
from service.app import create_app
from tests.e2e import launch
from tests.service.support import embedded_settings
from workers.tasks import JobRun, WorkerContext

BUCKETS = ("datasets", "shared/team-a", "ghost")  # ghost: no such bucket
N, FEATURES, CLASSES = 60, 4, 3


@dataclass
class S3Server:
    endpoint: str
    client: object
    npz: bytes
    csv: bytes


def _npz() -> bytes:
    rng = np.random.default_rng(0)
    y = np.arange(N) % CLASSES
    x = (rng.standard_normal((N, FEATURES)) + y[:, None]).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    import boto3

    with launch.moto_s3() as endpoint:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        npz = _npz()
        csv = b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n"
        for bucket in ("datasets", "shared", "elsewhere"):
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket="datasets", Key="iris-like/train.npz", Body=npz)
        client.put_object(Bucket="datasets", Key="table.csv", Body=csv)
        client.put_object(Bucket="datasets", Key="empty.npz", Body=b"")
        client.put_object(Bucket="shared", Key="team-a/data.npz", Body=npz)
        client.put_object(Bucket="shared", Key="team-ab/data.npz", Body=npz)
        client.put_object(Bucket="elsewhere", Key="data.npz", Body=npz)
        yield S3Server(endpoint, client, npz, csv)


@pytest.fixture
def settings(tmp_path: Path, s3: S3Server) -> Settings:
    """The embedded deployment, with datasets readable from two places of the S3 server."""
    config = embedded_settings(tmp_path, dataset_buckets=BUCKETS, s3_endpoint_url=s3.endpoint)
    upgrade(config.database_url)
    return config


@pytest.fixture
def model_id(settings: Settings, sessions, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """A small TorchScript classifier, stored and inspected (4 features -> 3 classes)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    blob = open_storage(settings.storage_url).put_file(path)
    model = Model(sha256=blob.sha256, size_bytes=blob.size_bytes, name="net.pt", status="ready",
                  format="torchscript", input_shape=[FEATURES], layers=[])
    with transaction(sessions) as session:
        session.add(model)
    return model.id


def _create(api: TestClient, model_id: str, ref: str):  # type: ignore[no-untyped-def]
    return api.post("/v1/jobs", json={"model_id": model_id, "dataset": ref,
                                      "analyses": [{"kind": "linear_probe"}]})


# --- the API ----------------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["s3://datasets/iris-like/train.npz", "s3://datasets/table.csv",
                                 "s3://shared/team-a/data.npz"])
def test_an_allowed_existing_object_is_queued(api, model_id, ref):
    created = _create(api, model_id, ref)
    assert created.status_code == 202, created.text
    assert created.json()["dataset"] == ref


@pytest.mark.parametrize(("ref", "needle"), [
    ("s3://elsewhere/data.npz",
     "outside the allowed dataset buckets (s3://datasets, s3://shared/team-a, s3://ghost)"),
    ("s3://shared/team-ab/data.npz", "outside the allowed dataset buckets"),
    ("s3://shared/other.npz", "outside the allowed dataset buckets"),
    ("s3://datasets/iris-like/train.parquet", "is not a .npz or .csv object"),
    ("s3://datasets/iris-like/", "not an object reference"),
    ("s3://datasets", "not an object reference"),
    ("s3://datasets/a/../../elsewhere/data.npz", "'..'"),
    ("s3://datasets/missing.npz", "no object s3://datasets/missing.npz"),
    ("s3://shared/team-a/missing.csv", "no object"),
    ("s3://datasets/empty.npz", "is empty"),
    ("s3://ghost/data.npz", "no object s3://ghost/data.npz"),
])
def test_a_refused_reference_is_a_422_naming_the_problem(api, model_id, ref, needle):
    answer = _create(api, model_id, ref)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert needle in answer.json()["detail"]
    assert api.get("/v1/jobs").json()["items"] == []


def test_an_unreachable_object_store_is_a_503_with_retry_after(settings, model_id):
    dead = replace(settings, s3_endpoint_url=f"http://127.0.0.1:{launch.free_port()}")
    with TestClient(create_app(dead)) as api:
        answer = _create(api, model_id, "s3://datasets/table.csv")
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) > 0
        assert "s3://datasets/table.csv" in answer.json()["detail"]
        assert api.get("/v1/jobs").json()["items"] == []


def test_the_artifact_store_is_never_a_dataset_bucket():
    found = parse_ref("s3://layerlens/blobs/" + "a" * 64 + ".npz")
    with pytest.raises(S3DatasetError, match="artifact store"):
        check_allowed(found, ("layerlens",), "s3://layerlens")
    with pytest.raises(S3DatasetError, match="artifact store"):
        check_allowed(parse_ref("s3://shared/artifacts/x.npz"), ("shared",),
                      "s3://shared/artifacts")
    check_allowed(parse_ref("s3://shared/datasets/x.npz"), ("shared",), "s3://shared/artifacts")


def test_the_setting_takes_buckets_and_prefixes_in_any_spelling():
    assert dataset_buckets("") == ()
    assert dataset_buckets("datasets, s3://shared/team-a/ other") == (
        "datasets", "shared/team-a", "other")


# --- the worker -------------------------------------------------------------------------

def _queued(api: TestClient, model_id: str, ref: str) -> str:
    created = _create(api, model_id, ref)
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def test_the_worker_downloads_the_object_into_the_job_folder(api, settings, model_id, s3,
                                                             tmp_path):
    job_id = _queued(api, model_id, "s3://datasets/iris-like/train.npz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    job_file = JobRun(WorkerContext(settings), job_id)._prepare(scratch)
    job = json.loads(job_file.read_text())
    assert job["dataset"] == {"ref": "s3://datasets/iris-like/train.npz",
                              "file": str(scratch / "dataset.npz")}
    assert (scratch / "dataset.npz").read_bytes() == s3.npz


def test_a_job_on_an_s3_dataset_runs_in_the_sandboxed_child(api, settings, model_id):
    """The whole job at worker level: fetch, the confined child (no network) reads its
    folder, the report stored; the report names the s3:// reference."""
    ref = "s3://shared/team-a/data.npz"
    job_id = _queued(api, model_id, ref)
    JobRun(WorkerContext(settings), job_id).run()
    status = api.get(f"/v1/jobs/{job_id}").json()
    assert status["status"] == "succeeded", status
    report = api.get(f"/v1/jobs/{job_id}/report").json()
    assert report["dataset"]["ref"] == ref
    assert report["dataset"]["n_samples"] == N and report["dataset"]["n_classes"] == CLASSES
    assert report["analyses"]["linear_probe"]["layers"]


def test_an_object_gone_before_the_job_runs_fails_it_as_invalid_input(api, settings, model_id,
                                                                       s3):
    s3.client.put_object(Bucket="datasets", Key="soon-gone.csv", Body=s3.csv)
    job_id = _queued(api, model_id, "s3://datasets/soon-gone.csv")
    s3.client.delete_object(Bucket="datasets", Key="soon-gone.csv")
    JobRun(WorkerContext(settings), job_id).run()
    status = api.get(f"/v1/jobs/{job_id}").json()
    assert (status["status"], status["reason"]) == ("failed", "invalid_input")
    assert status["error"] == "no object s3://datasets/soon-gone.csv in the object store"
    assert all(a["state"] == "pending" for a in status["analyses"].values())


def test_an_unreachable_store_fails_the_job_as_dataset_unavailable(api, settings, model_id,
                                                                    monkeypatch, sessions):
    job_id = _queued(api, model_id, "s3://datasets/table.csv")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = replace(settings, s3_endpoint_url=f"http://127.0.0.1:{launch.free_port()}")
    JobRun(WorkerContext(dead), job_id).run()
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.reason) == ("failed", "dataset_unavailable")
        assert "s3://datasets/table.csv" in (job.error or "")


def test_a_worker_whose_settings_disallow_the_bucket_refuses_it(api, settings, model_id):
    job_id = _queued(api, model_id, "s3://datasets/table.csv")
    stricter = replace(settings, dataset_buckets=("shared/team-a",))
    JobRun(WorkerContext(stricter), job_id).run()
    status = api.get(f"/v1/jobs/{job_id}").json()
    assert (status["status"], status["reason"]) == ("failed", "invalid_input")
    assert "outside the allowed dataset buckets" in status["error"]


# --- layerlens analyze ------------------------------------------------------------------

def _analyze(capsys, model: Path, ref: str,  # type: ignore[no-untyped-def]
             out: Path) -> tuple[int, str, str]:
    code = layerlens_cli(["analyze", str(model), "--dataset", ref, "--input-shape", "4",
                          "--analyses", "linear_probe", "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    torch.jit.script(nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(),
                                   nn.Linear(8, CLASSES))).save(str(path))
    return path


def test_analyze_downloads_an_s3_dataset(capsys, monkeypatch, s3, small_model, tmp_path):
    monkeypatch.setenv("LAYERLENS_S3_ENDPOINT_URL", s3.endpoint)
    ref = "s3://elsewhere/data.npz"  # the command line has no allow-list: the user's keys
    code, out, err = _analyze(capsys, small_model, ref, tmp_path / "out")
    assert code == 0, err
    assert f"on {ref} ({N} samples)" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"]["ref"] == ref and report["dataset"]["n_samples"] == N


@pytest.mark.parametrize(("ref", "needle"), [
    ("s3://datasets/missing.npz", "no object s3://datasets/missing.npz in the object store"),
    ("s3://datasets/table.parquet", "is not a .npz or .csv object"),
])
def test_analyze_refuses_a_bad_s3_reference_in_one_line(capsys, monkeypatch, s3, small_model,
                                                        tmp_path, ref, needle):
    monkeypatch.setenv("LAYERLENS_S3_ENDPOINT_URL", s3.endpoint)
    code, _, err = _analyze(capsys, small_model, ref, tmp_path / "out")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerlens: error: "), err
    assert needle in lines[0]
