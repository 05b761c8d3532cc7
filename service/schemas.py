"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]


class LayerOut(BaseModel):
    name: str
    shape: list[int]
    op: str | None = None


class ModelOut(BaseModel):
    id: str
    sha256: str
    format: Literal["onnx", "torchscript"]
    name: str
    size_bytes: int
    input_shape: list[int]
    layers: list[LayerOut]
    created_at: datetime


class DatasetOut(BaseModel):
    id: str
    sha256: str
    name: str
    format: Literal["npz", "csv"]
    size_bytes: int
    n_samples: int
    x_shape: list[int]
    n_classes: int
    ref: str = Field(description="the reference to use in a job: dataset:<id>")
    created_at: datetime


class JobCreate(BaseModel):
    """``POST /v1/jobs``. ``analyses`` entries follow the analysis spec; omitted means all four."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    dataset: str = Field(examples=["builtin:digits"])
    analyses: list[dict[str, Any]] | None = None
    layers: list[str] | None = Field(None, description="names or glob patterns; default all")
    max_samples: int | None = Field(None, ge=1)
    seed: int = 0


class AnalysisState(BaseModel):
    state: Literal["pending", "running", "succeeded"]
    duration_s: float | None = None


class JobOut(BaseModel):
    id: str
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0)
    stage: str | None
    analyses: dict[str, AnalysisState]
    error: str | None
    reason: str | None = Field(None, description="why it failed: invalid_input, timeout, "
                                                 "crashed, worker_lost")
    model_id: str
    dataset: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ArtifactOut(BaseModel):
    name: str
    content_type: str
    size_bytes: int
    sha256: str
    url: str


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")
