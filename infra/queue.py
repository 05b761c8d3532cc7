"""The Celery configuration shared by the API (send-only) and the workers.

The API sends tasks by name and never imports worker code. Settings for long
GPU jobs: late acknowledgement with reject-on-worker-lost (a job whose worker
dies is delivered again), prefetch 1, soft and hard time limits, and a broker
visibility timeout longer than the hard limit (so Redis never re-delivers a
job that is still running).
"""

from __future__ import annotations

import base64
import json
from typing import Any, cast

from amqp.exceptions import ChannelError
from celery import Celery
from kombu import Connection

from infra.config import Settings

JOBS_QUEUE = "jobs"
INSPECT_QUEUE = "inspect"
RUN_JOB = "layerlens.run_job"
INSPECT_MODEL = "layerlens.inspect_model"
INSPECT_DATASET = "layerlens.inspect_dataset"
INSPECT_TIME_LIMIT_S = 600
#: How much longer than the hard time limit the broker waits before re-delivering.
VISIBILITY_MARGIN_S = 3600
NOT_FOUND = "404"


def transport_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded:
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                "processed_folder": str(folder / "processed"), "store_processed": False,
                "control_folder": str(folder / "control")}
    return {"visibility_timeout": settings.job_time_limit_s + VISIBILITY_MARGIN_S}


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "task_soft_time_limit": settings.job_time_limit_s - 30,
        "task_time_limit": settings.job_time_limit_s,
        "task_routes": {RUN_JOB: {"queue": JOBS_QUEUE},
                        INSPECT_MODEL: {"queue": INSPECT_QUEUE},
                        INSPECT_DATASET: {"queue": INSPECT_QUEUE}},
        "task_default_queue": JOBS_QUEUE,
        "worker_enable_remote_control": not settings.embedded,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings) -> Celery:
    app = Celery("layerlens")
    app.conf.update(celery_config(settings))
    return app


class TaskQueue:
    """Send-only access to the broker: enqueue tasks, count waiting messages, ping."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = make_celery(settings)

    def send(self, task: str, *args: str) -> None:
        self.celery.send_task(task, args=list(args))

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not counting ones a worker holds)."""
        with self._connection() as connection:
            try:
                _, count, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
            except ChannelError as exc:  # Redis: no message was ever sent to it
                if str(exc.reply_code) == NOT_FOUND:
                    return 0
                raise
            return int(count)

    def job_ids_in_broker(self) -> set[str] | None:
        """Ids of the jobs whose ``run_job`` message waits in the jobs queue or is held by a
        worker (Redis: the queue's lists and the unacked hash; filesystem: the queue folder,
        where a message a worker took is gone). None for a transport we cannot read."""
        raw: list[bytes]
        if self.settings.embedded:
            folder = self.settings.broker_folder / "queue"
            raw = [path.read_bytes() for path in folder.glob(f"*.{JOBS_QUEUE}.msg")]
        elif self.settings.broker_url.startswith(("redis://", "rediss://")):
            import redis

            with redis.Redis.from_url(self.settings.broker_url, socket_timeout=5) as client:
                lists = client.scan_iter(match=f"{JOBS_QUEUE}*")  # and its priority lists
                raw = [
                    item for key in lists if key.split(b"\x06\x16")[0] == JOBS_QUEUE.encode()
                    for item in cast(list[bytes], client.lrange(key, 0, -1))]
                raw += [json.dumps(json.loads(held)[0]).encode()
                        for held in cast(list[bytes], client.hvals("unacked"))]
        else:
            return None
        return {job_id for job_id in map(_job_id, raw) if job_id is not None}

    def ping(self) -> None:
        with self._connection() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def _connection(self) -> Connection:
        return Connection(self.settings.broker_url,
                          transport_options=transport_options(self.settings),
                          connect_timeout=2)


def _job_id(payload: bytes) -> str | None:
    """The job id of a ``run_job`` message as kombu stores it (JSON, body base64 or not)."""
    try:
        message = json.loads(payload)
        if message.get("headers", {}).get("task") != RUN_JOB:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
