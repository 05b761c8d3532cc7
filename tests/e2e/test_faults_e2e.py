"""Faults injected for real on PostgreSQL + Redis: the worker process running a job is
SIGKILLed mid-run. The job is delivered again (late ack, reject on worker lost), taken over
once its lease lapses, and ends ``succeeded`` exactly once; a job whose worker dies every
time fails ``worker_lost`` after 3 attempts and the queue drains."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e import launch, reliability

pytestmark = pytest.mark.slow
LEASE_S = 5


def _pool_children(worker_pid: int) -> list[int]:
    return [int(p) for p in
            Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()]


def _kill_running_task(service: launch.Service, client, job_id: str, attempt: int) -> None:
    """Wait until the job's ``attempt`` runs (past its capture), then SIGKILL the pool process
    running it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if (job["status"] == "running" and job["attempts"] == attempt
                and job["stage"] not in (None, "capture")):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"job {job_id} never got past capture: {job}")
    jobs_worker = service.processes[1]
    for pid in _pool_children(jobs_worker.pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    launch.require(launch.postgres_available())
    launch.require(launch.redis_available())
    root = tmp_path_factory.mktemp("faults")
    with (launch.fresh_postgres_database() as database, launch.fresh_redis_db() as broker,
          launch.production(root, database, broker, job_lease=str(LEASE_S)) as running):
        yield running


@pytest.fixture(scope="module")
def model_id(service, cnn_files) -> str:
    return launch.upload_model(service, cnn_files["onnx"])


JOB = {"dataset": "builtin:digits", "max_samples": 400,
       "analyses": [{"kind": "linear_probe"}, {"kind": "projection", "method": "tsne"},
                    {"kind": "mutual_information"}]}


def test_a_job_whose_worker_is_killed_succeeds_exactly_once(service, model_id):
    with service.client() as client:
        job = client.post("/v1/jobs", json={"model_id": model_id, **JOB}).json()
        _kill_running_task(service, client, job["id"], attempt=1)
        done = launch.wait_for_job(client, job["id"], timeout_s=600)
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        names = [a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()]
    reliability.record("worker killed mid-job (SIGKILL)", injected=1, submitted=1,
                       lost=int(done["status"] != "succeeded"),
                       twice=int(len(names) != len(set(names))),
                       server_errors=service.server_errors())
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert list(report["analyses"]) == ["linear_probe", "projection", "mutual_information"]
    assert len(names) == len(set(names)) > 5
    assert service.server_errors() == 0, service.statuses


def test_a_job_that_kills_its_worker_every_time_fails_worker_lost(service, model_id):
    with service.client() as client:
        job = client.post("/v1/jobs", json={"model_id": model_id, **JOB}).json()
        for attempt in (1, 2, 3):
            _kill_running_task(service, client, job["id"], attempt)
        done = launch.wait_for_job(client, job["id"], timeout_s=300)
        after = client.post("/v1/jobs", json={"model_id": model_id, **JOB,
                                              "analyses": [{"kind": "linear_probe"}]}).json()
        next_job = launch.wait_for_job(client, after["id"], timeout_s=300)
        metrics = client.get("/metrics").text
    reliability.record("job kills its worker every time", injected=3, submitted=2,
                       lost=int(next_job["status"] != "succeeded"),
                       twice=int(done["attempts"] > 3), server_errors=service.server_errors())
    assert (done["status"], done["reason"], done["attempts"]) == (
        "failed", "worker_lost", 3), done
    assert next_job["status"] == "succeeded"
    assert 'layerlens_queue_depth{queue="jobs"} 0.0' in metrics
    assert service.server_errors() == 0, service.statuses
