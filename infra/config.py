"""Service settings, read from ``LAYERLENS_*`` environment variables.

The defaults are the embedded deployment: everything lives under one data
folder (SQLite file, filesystem broker, artifact directory), so a fresh
machine needs no server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LAYERLENS_{name}", default)


def dataset_buckets(text: str) -> tuple[str, ...]:
    """``LAYERLENS_DATASET_BUCKETS``: comma- or space-separated ``bucket`` or ``bucket/prefix``
    entries (an ``s3://`` in front and slashes at the ends are dropped)."""
    entries = (part.strip().removeprefix("s3://").strip("/")
               for part in text.replace(",", " ").split())
    return tuple(entry for entry in entries if entry)


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its state, and its limits.

    data_dir : folder of the embedded deployment's SQLite file, broker and artifacts.
    database_url : SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    broker_url : Celery broker (``filesystem://`` embedded, ``redis://...`` in production).
    storage_url : ``file:///abs/dir`` or ``s3://bucket[/prefix]``.
    s3_endpoint_url : endpoint of an S3-compatible store (MinIO); empty for AWS.
    max_upload_bytes : largest accepted upload body; larger ones get 413.
    inspect_timeout_s : how long an upload waits for a worker to inspect the file.
    dataset_roots : folders that ``file://`` dataset references must lie under.
    dataset_buckets : where ``s3://bucket/key`` dataset references may point: ``bucket``
        (any key) or ``bucket/prefix`` (keys under ``prefix/``), read from the object store
        at ``s3_endpoint_url``; none by default.
    job_time_limit_s : hard wall-clock limit of one job (the soft limit is 30 s less).
    job_memory_bytes : address space of the process that runs a job's model (CPU workers).
    job_lease_s : a running job whose worker has not written for this long was lost, and
        its redelivered message takes it over (workers write every 0.5 s).
    requeue_after_s : a queued job waiting this long, while the broker holds fewer messages
        than there are queued jobs, is sent again (service/sweep.py).
    sweep_interval_s : how often each API process runs that sweep; 0 turns it off.
    auth_required : every route but health, metrics and docs needs an API key. Off only for
        ``layerlens serve`` on loopback (``LAYERLENS_AUTH=off``, which serve sets there).
    """

    data_dir: Path
    database_url: str
    broker_url: str
    storage_url: str
    s3_endpoint_url: str = ""
    max_upload_bytes: int = 2 * 1024**3
    inspect_timeout_s: float = 120.0
    dataset_roots: tuple[Path, ...] = field(default_factory=tuple)
    dataset_buckets: tuple[str, ...] = field(default_factory=tuple)
    job_time_limit_s: int = 6 * 3600
    job_memory_bytes: int = 8 * 1024**3
    job_lease_s: float = 120.0
    requeue_after_s: float = 300.0
    sweep_interval_s: float = 30.0
    auth_required: bool = True

    @property
    def embedded(self) -> bool:
        """True when the broker needs no server (the filesystem transport)."""
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("DATA_DIR", "layerlens-data")).resolve()
        roots = tuple(Path(p).resolve() for p in _env("DATASET_ROOTS", "").split(os.pathsep) if p)
        return cls(
            data_dir=data_dir,
            database_url=_env("DATABASE_URL", f"sqlite:///{data_dir / 'layerlens.db'}"),
            broker_url=_env("BROKER_URL", "filesystem://"),
            storage_url=_env("STORAGE_URL", (data_dir / "storage").as_uri()),
            s3_endpoint_url=_env("S3_ENDPOINT_URL", ""),
            max_upload_bytes=int(_env("MAX_UPLOAD_BYTES", str(2 * 1024**3))),
            inspect_timeout_s=float(_env("INSPECT_TIMEOUT", "120")),
            dataset_roots=roots,
            dataset_buckets=dataset_buckets(_env("DATASET_BUCKETS", "")),
            job_time_limit_s=int(_env("JOB_TIME_LIMIT", str(6 * 3600))),
            job_memory_bytes=int(_env("JOB_MEMORY", str(8 * 1024**3))),
            job_lease_s=float(_env("JOB_LEASE", "120")),
            requeue_after_s=float(_env("REQUEUE_AFTER", "300")),
            sweep_interval_s=float(_env("SWEEP_INTERVAL", "30")),
            auth_required=_env("AUTH", "required") != "off",
        )
