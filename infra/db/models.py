"""ORM models. Alembic (``migrations/``) is the only thing that creates these tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


#: The tenant of everything made while the API runs without keys (loopback only).
LOCAL_TENANT = "local"


def _tenant_column() -> Mapped[str]:
    return mapped_column(String(64), index=True, default=LOCAL_TENANT,
                         server_default=LOCAL_TENANT)


class ApiKey(Base):
    """An API key: only its sha256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Model(Base):
    """An uploaded model file; ``layers`` is filled in by a worker's inspection."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = _tenant_column()
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="inspecting")  # -> ready | invalid
    error: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(16))
    input_shape: Mapped[list[Any] | None]
    layers: Mapped[list[Any] | None]
    #: the training run this file is a checkpoint of, and its step (``POST /v1/jobs``
    #: ``{"series": ...}`` analyses every checkpoint of a series in step order)
    series: Mapped[str | None] = mapped_column(String(255), index=True)
    step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    """An uploaded ``.npz``/``.csv`` dataset; its shape is filled in by a worker."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = _tenant_column()
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(8))  # npz | csv
    status: Mapped[str] = mapped_column(String(16), default="inspecting")
    error: Mapped[str | None] = mapped_column(Text)
    n_samples: Mapped[int | None] = mapped_column(Integer)
    x_shape: Mapped[list[Any] | None]
    n_classes: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One analysis run. ``status`` is the state machine, moved only by compare-and-set:
    queued -> running -> succeeded | failed | canceled (and queued -> canceled)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant: Mapped[str] = _tenant_column()
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    dataset_ref: Mapped[str] = mapped_column(String(1024))
    #: a series job: the series analysed (``model_id`` is then its last checkpoint)
    series: Mapped[str | None] = mapped_column(String(255))
    request: Mapped[dict[str, Any]]  # the validated job body
    request_sha256: Mapped[str] = mapped_column(String(64))
    #: ``<tenant>:<Idempotency-Key>``: unique, so one key makes one job per tenant
    idempotency_key: Mapped[str | None] = mapped_column(String(320), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    analyses: Mapped[dict[str, Any]]  # kind -> {"state": pending|running|done, ...}
    error: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(String(32))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim: Mapped[str | None] = mapped_column(String(32))  # token of the attempt that runs it
    worker: Mapped[str | None] = mapped_column(String(255))
    report_header: Mapped[dict[str, Any] | None]  # the report without its analyses
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: when its message was last sent to the broker, and how many times (see service/sweep.py)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueues: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class AnalysisResult(Base):
    """One analysis section of a finished job's report."""

    __tablename__ = "analysis_results"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]]
    duration_s: Mapped[float | None] = mapped_column(Float)


class Artifact(Base):
    """A file of a finished job, stored content-addressed under its sha256."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)


FINAL_STATES = frozenset({"succeeded", "failed", "canceled"})
JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled")
