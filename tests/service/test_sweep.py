"""The sweep re-sends jobs whose message was lost, and only those, on a real (filesystem)
broker and SQLite."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import update

from infra.db import jobs as state
from infra.db.models import Job, utcnow
from infra.db.session import transaction
from infra.queue import JOBS_QUEUE, RUN_JOB, TaskQueue
from service.sweep import SweepPolicy, stale_jobs, sweep, take_resend

POLICY = SweepPolicy(requeue_after_s=60.0, lease_s=10.0)


@pytest.fixture
def queue(settings) -> TaskQueue:
    return TaskQueue(settings)


def _job(sessions, model_id: str, *, age_s: float, send_to: TaskQueue | None = None) -> str:
    """A queued job made ``age_s`` seconds ago; its message sent only when ``send_to``."""
    then = utcnow() - timedelta(seconds=age_s)
    job = Job(model_id=model_id, dataset_ref="builtin:iris", request={"analyses": []},
              request_sha256="0" * 64, analyses={}, created_at=then, enqueued_at=then)
    with transaction(sessions) as session:
        session.add(job)
    if send_to is not None:
        send_to.send(RUN_JOB, job.id)
    return job.id


def _row(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def test_a_queued_job_without_a_message_is_sent_again_once(sessions, queue, ready_model):
    lost = _job(sessions, ready_model, age_s=POLICY.requeue_after_s + 5)
    assert queue.depth(JOBS_QUEUE) == 0
    assert sweep(sessions, queue, POLICY) == [lost]
    assert queue.depth(JOBS_QUEUE) == 1
    assert _row(sessions, lost).enqueues == 2
    assert sweep(sessions, queue, POLICY) == []  # its message now waits in the queue


def test_young_jobs_and_jobs_with_waiting_messages_are_left_alone(sessions, queue, ready_model):
    _job(sessions, ready_model, age_s=5)  # lost, but not for long enough to tell
    for _ in range(2):
        _job(sessions, ready_model, age_s=POLICY.requeue_after_s + 5, send_to=queue)
    assert sweep(sessions, queue, POLICY) == []
    assert queue.depth(JOBS_QUEUE) == 2


def test_each_re_send_doubles_the_wait_before_the_next(sessions, ready_model):
    job_id = _job(sessions, ready_model, age_s=POLICY.requeue_after_s + 5)
    now = utcnow()
    ((_, seen),) = stale_jobs(sessions, POLICY, in_broker=set(), now=now)
    assert take_resend(sessions, job_id, seen, now)
    after = [now + timedelta(seconds=s) for s in (1.5 * POLICY.requeue_after_s,
                                                   2.5 * POLICY.requeue_after_s)]
    assert stale_jobs(sessions, POLICY, in_broker=set(), now=after[0]) == []
    assert [j for j, _ in stale_jobs(sessions, POLICY, in_broker=set(), now=after[1])] == [
        job_id]


def test_of_two_sweepers_that_saw_the_same_row_only_one_sends(sessions, ready_model):
    job_id = _job(sessions, ready_model, age_s=POLICY.requeue_after_s + 5)
    now = utcnow()
    ((_, seen),) = stale_jobs(sessions, POLICY, in_broker=set(), now=now)
    assert [take_resend(sessions, job_id, seen, now) for _ in range(2)] == [True, False]
    assert _row(sessions, job_id).enqueues == 2


def test_a_running_job_whose_worker_went_silent_is_sent_again(sessions, queue, ready_model):
    job_id = _job(sessions, ready_model, age_s=1000)
    assert state.claim(sessions, job_id, "worker-a") is not None
    assert sweep(sessions, queue, POLICY) == []  # its worker writes: alive
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=2 * POLICY.lease_s + 1)))
    assert sweep(sessions, queue, POLICY) == [job_id]
    assert state.claim(sessions, job_id, "worker-b", POLICY.lease_s) is not None


def test_finished_and_canceled_jobs_are_never_sent_again(sessions, queue, ready_model):
    done = _job(sessions, ready_model, age_s=1000)
    canceled = _job(sessions, ready_model, age_s=1000)
    token = state.claim(sessions, done, "worker-a")
    with transaction(sessions) as session:
        state.finish(session, done, token, "failed", reason="crashed")
    state.request_cancel(sessions, canceled)
    assert sweep(sessions, queue, POLICY) == []


def test_redis_messages_waiting_and_held_by_a_worker_are_found(tmp_path):
    """On real Redis: a message a consumer holds unacknowledged still counts as present."""
    from dataclasses import replace

    from kombu import Connection

    from tests.e2e import launch
    from tests.service.support import embedded_settings

    reason = launch.redis_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with launch.fresh_redis_db() as url:
        queue = TaskQueue(replace(embedded_settings(tmp_path), broker_url=url))
        assert queue.job_ids_in_broker() == set()
        queue.send(RUN_JOB, "held")
        queue.send(RUN_JOB, "waiting")
        with Connection(url) as connection:
            consumer = connection.SimpleQueue(JOBS_QUEUE, no_ack=False)
            message = consumer.get(timeout=5)
            assert queue.depth(JOBS_QUEUE) == 1
            assert queue.job_ids_in_broker() == {"held", "waiting"}
            message.ack()
            consumer.close()
        assert queue.job_ids_in_broker() == {"waiting"}


def test_a_backlog_with_messages_does_not_hide_a_lost_job(sessions, queue, ready_model,
                                                          monkeypatch):
    import service.sweep

    monkeypatch.setattr(service.sweep, "BATCH", 2)
    for _ in range(3):  # older than the lost job, and each has its message
        _job(sessions, ready_model, age_s=POLICY.requeue_after_s + 50, send_to=queue)
    lost = _job(sessions, ready_model, age_s=POLICY.requeue_after_s + 5)
    assert sweep(sessions, queue, POLICY) == [lost]
