"""The compose deployment reads ``s3://`` datasets from a bucket its one-shot setup creates,
never from the artifact store's bucket."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.config import dataset_buckets
from infra.s3_datasets import S3DatasetError, check_allowed, parse_ref

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_dataset_buckets_exist_and_are_not_the_artifact_store():
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    env = services["api"]["environment"]  # every layerlens service shares it (test_compose)
    buckets = dataset_buckets(env["LAYERLENS_DATASET_BUCKETS"])
    assert buckets, "compose allows no s3:// dataset bucket"
    created = services["minio-bucket"]["command"]
    for entry in buckets:
        assert f"local/{entry.split('/')[0]}" in created, f"minio-bucket does not create {entry}"
        check_allowed(parse_ref(f"s3://{entry}/data.npz"), buckets, env["LAYERLENS_STORAGE_URL"])
    artifacts = env["LAYERLENS_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    with pytest.raises(S3DatasetError):
        check_allowed(parse_ref(f"s3://{artifacts}/blobs/x.npz"), buckets,
                      env["LAYERLENS_STORAGE_URL"])
