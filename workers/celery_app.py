"""The Celery application of the workers: ``celery -A workers.celery_app worker``."""

from __future__ import annotations

from celery import Task

from infra.config import Settings
from infra.queue import INSPECT_DATASET, INSPECT_MODEL, INSPECT_TIME_LIMIT_S, RUN_JOB, make_celery
from workers.tasks import JobRun, LeaseHeld, WorkerContext, inspect_dataset, inspect_model

settings = Settings.from_env()
app = make_celery(settings)
context = WorkerContext(settings)


@app.task(name=RUN_JOB, bind=True)
def run_job(self: Task, job_id: str) -> None:
    try:
        JobRun(context, job_id).run()
    except LeaseHeld as held:  # a redelivery after a lost worker, or a duplicate: wait
        raise self.retry(countdown=held.seconds + 1, max_retries=None) from held


@app.task(name=INSPECT_MODEL, soft_time_limit=INSPECT_TIME_LIMIT_S + 30,
          time_limit=INSPECT_TIME_LIMIT_S + 60)
def inspect_model_task(model_id: str) -> None:
    inspect_model(context, model_id)


@app.task(name=INSPECT_DATASET, soft_time_limit=INSPECT_TIME_LIMIT_S + 30,
          time_limit=INSPECT_TIME_LIMIT_S + 60)
def inspect_dataset_task(dataset_id: str) -> None:
    inspect_dataset(context, dataset_id)
