"""Outages of this machine's real Redis and PostgreSQL, injected while jobs run.

Redis is killed (SIGKILL; it keeps nothing on disk, so every message is lost) with
jobs queued: after it returns, the sweep re-sends them and all finish, each run once.
PostgreSQL is stopped mid-job: meanwhile ``/readyz`` answers 503 and ``/healthz`` 200
and other routes a 503 problem; the first request after it returns succeeds, and the
job, whose worker kept going, succeeds on its first attempt.

Time to recover (the reliability table): Redis, from its return until every job
queued before the outage is done; PostgreSQL, until the first request succeeds.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e import launch, reliability, servers

pytestmark = pytest.mark.slow
SMALL_JOB = {"dataset": "builtin:digits", "max_samples": 200,
             "analyses": [{"kind": "linear_probe"}]}
LONG_JOB = {"dataset": "builtin:digits", "max_samples": 400,
            "analyses": [{"kind": "linear_probe"}, {"kind": "projection", "method": "tsne"},
                         {"kind": "mutual_information"}]}
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    launch.require(launch.postgres_available())
    launch.require(launch.redis_available())
    launch.require(servers.control_unavailable())
    root = tmp_path_factory.mktemp("outages")
    with (launch.fresh_postgres_database() as database, launch.fresh_redis_db() as broker,
          launch.production(root, database, broker, job_lease="60", sweep_interval="1",
                            requeue_after="3") as running):
        yield running


@pytest.fixture(scope="module")
def model_id(service, cnn_files) -> str:
    return launch.upload_model(service, cnn_files["onnx"])


def _ready_within(client, timeout_s: float) -> None:
    start = time.monotonic()
    while client.get("/readyz").status_code != 200:
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not ready {timeout_s} s after the server returned")
        time.sleep(0.1)


def test_jobs_queued_while_redis_restarts_all_finish_once(service, model_id):
    redis = servers.RedisServer(launch.REDIS_URL)
    with service.client() as client:
        ids = [client.post("/v1/jobs", json={"model_id": model_id, **SMALL_JOB}).json()["id"]
               for _ in range(4)]
        with redis.stopped():
            known = client.get(f"/v1/jobs/{ids[-1]}")
            refused = client.post("/v1/jobs", json={"model_id": model_id, **SMALL_JOB})
            ready = client.get("/readyz")
        returned = time.monotonic()
        _ready_within(client, 120)
        done = [launch.wait_for_job(client, job_id, timeout_s=300) for job_id in ids]
        recover_s = time.monotonic() - returned  # until every job queued before is done
        listed = {job["id"] for job in client.get("/v1/jobs", params={"limit": 100}).json()[
            "items"]}
    reliability.record("Redis killed and restarted, jobs queued", injected=1,
                       submitted=len(ids), lost=sum(j["status"] != "succeeded" for j in done),
                       twice=sum(j["attempts"] > 1 for j in done),
                       server_errors=service.server_errors(), recover_s=recover_s)
    assert known.status_code == 200  # what the database knows needs no broker
    assert refused.status_code == 503 and refused.headers["content-type"] == PROBLEM_JSON
    assert refused.headers.get("retry-after")
    assert ready.status_code == 503 and ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["broker"].startswith("unavailable")
    assert [job["status"] for job in done] == ["succeeded"] * len(ids), done
    assert [job["attempts"] for job in done] == [1] * len(ids)
    assert listed == set(ids)  # the refused job left no row behind
    assert service.server_errors() == 0, service.statuses


def test_postgres_stopped_mid_job(service, model_id):
    postgres = servers.PostgresServer()
    with service.client() as client:
        job_id = client.post("/v1/jobs", json={"model_id": model_id, **LONG_JOB}).json()["id"]
        launch.wait_for_job(client, job_id, timeout_s=300, until=frozenset({"running"}))
        with postgres.stopped():
            time.sleep(1.0)  # past the API's status cache
            health = client.get("/healthz")
            ready = client.get("/readyz")
            status = client.get(f"/v1/jobs/{job_id}")
            listing = client.get("/v1/models")
        returned = time.monotonic()
        first = client.get(f"/v1/jobs/{job_id}")
        recover_s = time.monotonic() - returned
        done = launch.wait_for_job(client, job_id, timeout_s=600)
        report = client.get(f"/v1/jobs/{job_id}/report")
    reliability.record("PostgreSQL stopped mid-job", injected=1, submitted=1,
                       lost=int(done["status"] != "succeeded"), twice=int(done["attempts"] > 1),
                       server_errors=service.server_errors(), recover_s=recover_s)
    assert health.status_code == 200
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith(
        "unavailable")
    for answer in (status, listing):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert "database is unavailable" in answer.json()["detail"]
    assert first.status_code == 200, first.text
    assert (done["status"], done["attempts"]) == ("succeeded", 1), done
    assert list(report.json()["analyses"]) == [a["kind"] for a in LONG_JOB["analyses"]]
    assert service.server_errors() == 0, service.statuses
