"""The Celery application of the workers: ``celery -A workers.celery_app worker``."""

from __future__ import annotations

from service.config import Settings
from service.queue import INSPECT_DATASET, INSPECT_MODEL, INSPECT_TIME_LIMIT_S, RUN_JOB, make_celery
from workers.tasks import JobRun, WorkerContext, inspect_dataset, inspect_model

settings = Settings.from_env()
app = make_celery(settings)
context = WorkerContext(settings)


@app.task(name=RUN_JOB)
def run_job(job_id: str) -> None:
    JobRun(context, job_id).run()


@app.task(name=INSPECT_MODEL, soft_time_limit=INSPECT_TIME_LIMIT_S + 30,
          time_limit=INSPECT_TIME_LIMIT_S + 60)
def inspect_model_task(model_id: str) -> None:
    inspect_model(context, model_id)


@app.task(name=INSPECT_DATASET, soft_time_limit=INSPECT_TIME_LIMIT_S + 30,
          time_limit=INSPECT_TIME_LIMIT_S + 60)
def inspect_dataset_task(dataset_id: str) -> None:
    inspect_dataset(context, dataset_id)
