"""The job row's state machine: compare-and-set transitions make duplicate deliveries no-ops."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from infra.db import jobs as state
from infra.db.models import AnalysisResult, Artifact, Job, utcnow
from infra.db.session import transaction


def _job(sessions, model_id: str) -> str:
    job = Job(model_id=model_id, dataset_ref="builtin:iris", request={"analyses": []},
              request_sha256="0" * 64, analyses={})
    with transaction(sessions) as session:
        session.add(job)
    return job.id


def _status(sessions, job_id: str) -> str:
    with sessions() as session:
        return session.get(Job, job_id).status


def test_a_second_delivery_of_a_running_job_is_a_no_op(sessions, ready_model):
    job_id = _job(sessions, ready_model)
    first = state.claim(sessions, job_id, "a")
    assert first is not None
    assert state.claim(sessions, job_id, "b") is None
    assert _status(sessions, job_id) == "running"


def test_only_the_claim_holder_can_finish_and_only_once(sessions, ready_model):
    job_id = _job(sessions, ready_model)
    token = state.claim(sessions, job_id, "a")
    artifacts = [("a.png", "f" * 64, "image/png", 3)]
    assert not state.store_report(sessions, job_id, "wrong-token", header={}, sections={"x": {}},
                             durations={}, analyses={}, artifacts=artifacts)
    assert state.store_report(sessions, job_id, token, header={"model": {}}, sections={"x": {}},
                         durations={"x": 1.5}, analyses={}, artifacts=artifacts)
    assert not state.store_report(sessions, job_id, token, header={}, sections={"x": {}},
                             durations={}, analyses={}, artifacts=artifacts)
    with sessions() as session:
        assert session.get(Job, job_id).status == "succeeded"
        assert session.query(AnalysisResult).filter_by(job_id=job_id).count() == 1
        assert session.query(Artifact).filter_by(job_id=job_id).count() == 1
    assert state.claim(sessions, job_id, "c") is None


def test_a_job_whose_worker_went_silent_can_be_claimed_again(sessions, ready_model):
    job_id = _job(sessions, ready_model)
    old = state.claim(sessions, job_id, "a")
    assert state.claim(sessions, job_id, "b") is None
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=state.LEASE_S + 1)))
    new = state.claim(sessions, job_id, "b")
    assert new is not None and new != old
    assert state.heartbeat(sessions, job_id, old, progress=0.5, stage=None, analyses={}) is False
    with sessions() as session:
        assert session.get(Job, job_id).attempts == 2


def test_cancel_before_claim_wins(sessions, ready_model):
    job_id = _job(sessions, ready_model)
    state.request_cancel(sessions, job_id)
    assert _status(sessions, job_id) == "canceled"
    assert state.claim(sessions, job_id, "a") is None


def _go_silent(sessions, job_id: str) -> None:
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=state.LEASE_S + 1)))


def test_a_delivery_that_finds_its_job_running_learns_when_the_lease_lapses(sessions,
                                                                           ready_model):
    job_id = _job(sessions, ready_model)
    assert state.lease_left(sessions, job_id) is None  # queued: nothing to wait for
    state.claim(sessions, job_id, "a")
    assert state.LEASE_S - 5 < state.lease_left(sessions, job_id) <= state.LEASE_S
    _go_silent(sessions, job_id)
    assert state.lease_left(sessions, job_id) == 0.0


def test_a_job_that_loses_its_worker_three_times_fails_worker_lost(sessions, ready_model):
    job_id = _job(sessions, ready_model)
    for attempt in range(1, state.MAX_ATTEMPTS + 1):
        assert state.claim(sessions, job_id, f"w{attempt}") is not None
        _go_silent(sessions, job_id)
    assert state.claim(sessions, job_id, "w4") is None
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.reason, job.attempts) == ("failed", "worker_lost", 3)
    assert state.lease_left(sessions, job_id) is None
