"""Celery settings for long GPU jobs."""

from __future__ import annotations

from pathlib import Path

from infra.config import Settings
from infra.queue import celery_config


def _redis_settings(limit_s: int) -> Settings:
    return Settings(data_dir=Path("/nonexistent"), database_url="sqlite://",
                    broker_url="redis://127.0.0.1:6379/0", storage_url="file:///tmp/x",
                    job_time_limit_s=limit_s)


def test_redis_visibility_timeout_outlasts_the_hard_time_limit():
    for limit in (600, 6 * 3600, 48 * 3600):
        config = celery_config(_redis_settings(limit))
        visibility = config["broker_transport_options"]["visibility_timeout"]
        assert config["task_soft_time_limit"] < config["task_time_limit"] == limit
        assert visibility > config["task_time_limit"], (visibility, limit)


def test_late_ack_reject_on_worker_lost_prefetch_one():
    config = celery_config(_redis_settings(3600))
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_concurrency"] == 1
    assert config["task_routes"]["layerlens.run_job"]["queue"] == "jobs"
    assert config["task_routes"]["layerlens.inspect_model"]["queue"] == "inspect"


def test_the_embedded_broker_needs_no_server(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="sqlite://", broker_url="filesystem://",
                        storage_url=tmp_path.as_uri())
    options = celery_config(settings)["broker_transport_options"]
    assert Path(options["data_folder_in"]).is_dir()
    assert Path(options["data_folder_in"]).is_relative_to(tmp_path)
