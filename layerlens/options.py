"""The job options: ONE schema for everything a run takes besides the model and the dataset.

``layerlens analyze`` derives its flags from it, ``POST /v1/jobs`` its body
(plus ``model_id`` and ``dataset``), the worker writes it into the job file
and the sandboxed child reads it back. torch-free.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from layerlens.analyses.registry import REGISTRY
from layerlens.analyses.sections import SpecEntry
from layerlens.errors import InputError
from layerlens.spec import parse_spec, spec_union

#: Stored activations larger than this are reduced (bytes).
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
#: Features a random projection keeps of a wider layer.
DEFAULT_MAX_FEATURES = 4096
#: The analyses that use the option ``compare_to``.
COMPARING_KINDS = ("similarity",)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: Any) -> Any:
    """``"512MB"``, ``"2GB"``, ``"1.5 GiB"`` or a number of bytes -> bytes (1 KB = 1024 B)."""
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"expected a size like 512MB or 2GB, got '{value}'")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


Positive = Annotated[int, Field(ge=1)]
Bytes = Annotated[int, BeforeValidator(parse_size), Field(ge=1)]


class JobOptions(BaseModel):
    """Everything a run takes besides the model and the dataset.

    ``analyses`` entries are validated against the registered kinds when the
    options are made (:func:`layerlens.spec.parse_spec`); None runs every
    kind with its defaults. :func:`job_options_model` is the same model with
    ``analyses`` typed as the union of the kinds, for JSON schemas.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    analyses: list[SerializeAsAny[SpecEntry]] | None = Field(
        default=None, description="the analyses to run, each with its parameters; "
                                  "default every kind")

    layers: list[str] | None = Field(
        default=None, description="layer names or glob patterns; default every layer")
    max_samples: Positive | None = Field(
        default=None, description="analyse at most N samples (stratified, seeded)")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seeds every random choice")
    input_shape: list[Positive] | None = Field(
        default=None, description="shape of one sample, e.g. [1, 8, 8]; default the model's")
    input_name: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="the model input that the dataset's x feeds (its other inputs come from "
                    "the .npz arrays named after them); default the first input")
    mean: list[float] | None = Field(
        default=None, description="per-channel mean subtracted from the inputs")
    std: list[Annotated[float, Field(gt=0)]] | None = Field(
        default=None, description="per-channel standard deviation dividing the inputs")
    batch_size: Positive = Field(default=256, description="samples per forward pass, at most")
    memory_budget: Bytes = Field(
        default=DEFAULT_MEMORY_BUDGET,
        description="bound on the run's own memory in bytes (or a size like \"512MB\"), on "
                    "top of a fixed overhead of about 0.5-0.8 GB (Python, torch, onnxruntime, "
                    "the model): larger layers are reduced, capture batches and probe groups "
                    "are sized to it, and stored activations past a quarter of it wait on "
                    "disk beside the report")
    max_features: Positive = Field(
        default=DEFAULT_MAX_FEATURES, description="features a random projection keeps")
    sequence_pooling: Literal["mean", "first", "last"] = Field(
        default="mean", description="how a sequence layer (L, D) of a token model is pooled "
                                    "over its L positions: the mean, the first or the last "
                                    "position (never over the D features)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where the model and the analyses run")
    compare_to: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="another model whose layers the similarity analysis compares with this "
                    "one's on the same samples: a model file (command line) or a model id "
                    "from POST /v1/models (HTTP)")

    @classmethod
    def parse(cls, data: Any, spell: Callable[[str], str] = str) -> JobOptions:
        """Validate ``data`` (JSON-like); raise :class:`InputError` naming the first problem,
        its option spelled by ``spell`` (the CLI passes ``batch_size -> --batch-size``)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            field, *rest = [str(part) for part in error["loc"]] or [""]
            where = ".".join([spell(field), *rest]) if field else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown option '{where}'"
            elif where:
                message = f"{where}: {message}"
            raise InputError(message) from exc

    @field_validator("analyses", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if not isinstance(value, list) or all(isinstance(entry, SpecEntry) for entry in value):
            return value  # None, parsed entries, or a type error the field itself reports
        return parse_spec(value)

    @field_validator("compare_to")
    @classmethod
    def _compared_by_an_analysis(cls, value: str | None, info: ValidationInfo) -> str | None:
        analyses = info.data.get("analyses")  # absent when invalid; None: every kind
        if value is not None and analyses is not None and not any(
                entry.kind in COMPARING_KINDS for entry in analyses):
            raise ValueError(f"only the {' and '.join(COMPARING_KINDS)} analysis compares "
                             "two models, and this job does not run it")
        return value


def job_options_model() -> type[JobOptions]:
    """:class:`JobOptions` with ``analyses`` typed as the union of the registered kinds' specs
    (so a JSON schema, ``POST /v1/jobs`` in OpenAPI, documents every kind and its keys)."""
    return _job_options_at(REGISTRY.version)


@functools.cache
def _job_options_at(version: int) -> type[JobOptions]:
    analyses: Any = list[spec_union()] | None  # type: ignore[misc]
    model: type[JobOptions] = create_model(
        "JobOptions", __base__=JobOptions, __doc__=JobOptions.__doc__,
        analyses=(analyses, JobOptions.model_fields["analyses"]))
    return model


def option_fields() -> dict[str, Any]:
    """Option name -> pydantic field: what the CLI and the API must both offer."""
    return dict(JobOptions.model_fields)
