"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from layerlens.options import JobOptions, job_options_model

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
#: The longest dataset reference a job stores (``jobs.dataset_ref``).
MAX_DATASET_REF = 1024
UNSTORABLE = "must not contain NUL characters or unpaired surrogates"


def storable(text: str) -> bool:
    """Whether the database can hold and compare ``text``: PostgreSQL refuses NUL characters,
    and UTF-8 cannot encode an unpaired surrogate (which JSON can spell: ``"\\ud800"``)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(text: str) -> str:
    if not storable(text):
        raise ValueError(UNSTORABLE)
    return text


#: A string the request stores or looks up.
Text = Annotated[str, AfterValidator(_storable)]


def _unstorable(value: Any, where: str) -> str | None:
    """Where in a JSON value a string the database cannot hold, or a non-finite number
    (Python's JSON reader takes NaN and Infinity), is; None when there is none."""
    if isinstance(value, str):
        return None if storable(value) else f"{where}: {UNSTORABLE}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}: numbers must be finite"
    if isinstance(value, dict):
        for key, item in value.items():
            if not storable(key):
                return f"{where}: keys {UNSTORABLE}"
            if (found := _unstorable(item, f"{where}.{key}")) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _unstorable(item, f"{where}[{index}]")) is not None:
                return found
    return None


class LayerOut(BaseModel):
    name: str
    shape: list[int]
    op: str | None = None


class ModelOut(BaseModel):
    id: str
    sha256: str
    format: Literal["onnx", "torchscript", "pt2"]
    name: str
    size_bytes: int
    input_shape: list[int]
    layers: list[LayerOut]
    series: str | None = Field(None, description="the training run this is a checkpoint of")
    step: int | None = Field(None, description="its training step in the series")
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


def _job_create_model() -> type[JobOptions]:
    """``POST /v1/jobs``: the engine's job options (:mod:`layerlens.options`, the same schema
    as the CLI's flags) plus the model and the dataset. Built from the analysis kinds
    registered when this module is imported."""

    def storable_body(cls: type, data: Any) -> Any:
        if isinstance(data, dict) and (found := _unstorable(data, "body")) is not None:
            raise ValueError(found.removeprefix("body."))
        return data

    def one_model(job: Any) -> Any:
        if (job.model_id is None) == (job.series is None):
            raise ValueError("give exactly one of model_id (one model) and series (the "
                             "checkpoints of a training run)")
        return job

    return create_model(
        "JobCreate", __base__=job_options_model(),
        __doc__="A job: a model, a dataset reference and the job options; omitted options "
                "take their defaults (``analyses``: every kind).",
        __validators__={
            "storable_body": model_validator(mode="before")(storable_body),  # type: ignore[dict-item]
            "one_model": model_validator(mode="after")(one_model)},  # type: ignore[dict-item]
        model_id=(Text | None, Field(default=None, description="from POST /v1/models; or give "
                                                             "series")),
        series=(Text | None, Field(default=None, max_length=255,
                                   description="a checkpoint series (POST /v1/models with "
                                               "series and step): every checkpoint, in step "
                                               "order, instead of model_id")),
        dataset=(Text, Field(examples=["builtin:digits"], max_length=MAX_DATASET_REF,
                             description="builtin:<name>, dataset:<id>, file://<path> under "
                                         "LAYERLENS_DATASET_ROOTS or s3://bucket/key.npz in "
                                         "LAYERLENS_DATASET_BUCKETS")))


if TYPE_CHECKING:
    class JobCreate(JobOptions):
        model_id: str | None
        series: str | None
        dataset: str
else:
    JobCreate = _job_create_model()


class AnalysisState(BaseModel):
    state: Literal["pending", "running", "succeeded", "failed"]
    duration_s: float | None = None


class JobOut(BaseModel):
    id: str
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0)
    stage: str | None
    analyses: dict[str, AnalysisState]
    error: str | None
    reason: str | None = Field(None, description="why it failed: invalid_input, timeout, "
                                                 "crashed, worker_lost, memory, "
                                                 "analysis_failed (the report holds the "
                                                 "analyses that finished), "
                                                 "dataset_unavailable (an s3:// dataset "
                                                 "could not be read)")
    model_id: str = Field(description="the model; of a series job, its last checkpoint")
    series: str | None = Field(None, description="a series job: the series analysed")
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


class FieldError(BaseModel):
    field: str = Field(description="where: a dotted path into the body, or a parameter's name")
    message: str


class ProblemOut(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``. Some carry extra members: ``errors``
    (422 request validation), ``limit_bytes`` (413), ``model_id``/``dataset_id`` (503 while an
    upload awaits inspection), ``status_of_job`` (409), ``checks`` (readiness)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | SkipJsonSchema[None] = Field(None, description="the request path")
    errors: list[FieldError] | SkipJsonSchema[None] = None


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="database, broker, storage: ok")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")
