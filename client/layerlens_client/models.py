"""Typed responses of the layerlens HTTP API.

Every model tolerates fields it does not know (a newer server may add some), so an
older client keeps working. Status strings are plain ``str`` for the same reason;
the values the API documents are listed on each field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = [
    "FINAL_STATUSES",
    "AnalysisState",
    "Artifact",
    "DatasetInfo",
    "Job",
    "Layer",
    "Model",
    "Page",
]

#: Job statuses after which nothing changes any more.
FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class _Response(BaseModel):
    # extra="allow": unknown fields are kept (model.model_extra), never an error.
    # protected_namespaces=(): `model_id` is a field here, not a pydantic method.
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Layer(_Response):
    """One layer of an uploaded model, in forward execution order."""

    name: str
    shape: list[int]
    op: str | None = None


class Model(_Response):
    """An uploaded model (``POST /v1/models``, ``GET /v1/models/{id}``)."""

    id: str
    sha256: str
    format: str  # "onnx" | "torchscript"
    name: str = ""
    size_bytes: int = 0
    input_shape: list[int] = []
    layers: list[Layer]
    series: str | None = None  # the training run this file is a checkpoint of
    step: int | None = None  # its training step in the series
    created_at: datetime | None = None


class DatasetInfo(_Response):
    """An uploaded dataset (``POST /v1/datasets``); pass ``ref`` as a job's dataset."""

    id: str
    sha256: str = ""
    name: str = ""
    format: str = ""  # "npz" | "csv"
    size_bytes: int = 0
    n_samples: int
    x_shape: list[int]
    n_classes: int
    ref: str = ""
    created_at: datetime | None = None

    @model_validator(mode="after")
    def _default_ref(self) -> DatasetInfo:
        if not self.ref:
            self.ref = f"dataset:{self.id}"
        return self


class AnalysisState(_Response):
    """One analysis of a job: ``state`` is "pending", "running", "succeeded" or "failed"
    (a failed analysis leaves the others' results; the report marks it failed)."""

    state: str
    duration_s: float | None = None


class Job(_Response):
    """An analysis job; ``status`` is one of queued, running, succeeded, failed, canceled."""

    id: str
    status: str
    progress: float = 0.0
    stage: str | None = None
    analyses: dict[str, AnalysisState] = {}
    error: str | None = None
    # why it failed: invalid_input, analysis_failed, timeout, crashed, worker_lost, memory;
    # after analysis_failed (and an invalid_input met by an analysis) report() serves the
    # report of what finished
    reason: str | None = None
    model_id: str | None = None
    series: str | None = None  # a series job: the series analysed
    dataset: str | None = None
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        """True once the job succeeded, failed or was canceled."""
        return self.status in FINAL_STATUSES


class Artifact(_Response):
    """A file a finished job produced (PNG image, ``.npy`` array, the HTML page)."""

    name: str
    content_type: str
    size_bytes: int
    sha256: str
    url: str


T = TypeVar("T")


class Page(_Response, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``?cursor=`` for the next."""

    items: list[T]
    next_cursor: str | None = None
