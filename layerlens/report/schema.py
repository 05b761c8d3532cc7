"""The report document (``report.json``), identical from the CLI and the API.

Every number is plain JSON; every ``image`` names an artifact relative to
the report's folder. Later analyses add keys under ``analyses``; nothing
here changes meaning. ``analyses`` holds one section per registered kind
(:mod:`layerlens.analyses.registry`): its typed model, or
:class:`~layerlens.analyses.sections.FailedAnalysis` when it raised.
:func:`report_model` is the whole document typed, for schemas and readers.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)

from layerlens.analyses.registry import REGISTRY
from layerlens.analyses.sections import FailedAnalysis


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerEntry(_Strict):
    name: str
    op: str = Field(description="module type (TorchScript) or ONNX operator")
    shape: list[int] = Field(description="output shape of one sample")


class LayerWithoutGradients(_Strict):
    layer: str
    reason: str


class ModelSection(_Strict):
    sha256: str
    format: Literal["onnx", "torchscript", "pt2"]
    input_shape: list[int]
    input_mean: list[float] | None = Field(
        default=None, description="per-channel mean subtracted from every input (option mean)")
    input_std: list[float] | None = Field(
        default=None, description="per-channel std dividing every input (option std)")
    differentiable: bool
    gradient_note: str | None = Field(
        default=None, description="why gradient-based analyses cannot run, when they cannot")
    layers_without_gradients: list[LayerWithoutGradients] = Field(
        default_factory=list,
        description="layers of a differentiable model that have no gradients with respect to "
                    "the input (gradient-based analyses skip them), and why")
    layers: list[LayerEntry]


class DatasetSection(_Strict):
    ref: str
    n_samples: int = Field(description="samples analysed (after --max-samples)")
    n_classes: int
    n_total: int = Field(description="samples in the dataset before subsampling")


class ReductionEntry(_Strict):
    """How a layer's stored features were reduced: ``spatial_mean`` (a feature map over its
    spatial axes), ``random_projection``, or ``sequence_mean`` / ``sequence_first`` /
    ``sequence_last`` (a token model's sequence layer ``(L, D)`` pooled over its positions,
    the job option ``sequence_pooling``)."""

    method: Literal["spatial_mean", "random_projection", "sequence_mean", "sequence_first",
                    "sequence_last"]
    from_shape: list[int]
    to: int
    seed: int | None = None


class ActivationLayer(_Strict):
    layer: str
    shape: list[int]
    mean: float
    std: float
    dead_fraction: float = Field(description="fraction of units constant over every sample")
    stored_features: int
    reduction: ReductionEntry | None = None


class ActivationsSection(_Strict):
    n_samples: int
    batch_size: int
    image: str
    layers: list[ActivationLayer]


class Warning_(_Strict):
    """Work that did not finish: an analysis (``layer`` null) or one layer of it."""

    model_config = ConfigDict(extra="forbid", title="Warning")
    analysis: str
    layer: str | None = None
    message: str


Matrix = list[list[float | None]]


class Compression(_Strict):
    """Whether a layer's I(X;T) fell after its peak by more than the tolerance."""

    layer: str
    peak_step: int | None = Field(description="the step where I(X;T) peaks")
    drop_bits: float | None = Field(description="I(X;T) at the peak minus at the last step")
    compressed: bool | None = Field(description="drop_bits above the section's tolerance_bits")


class ProbeDynamics(_Strict):
    test_accuracy: Matrix = Field(description="[step][layer], null where the layer was skipped")
    image: str | None = Field(default=None, description="heatmap, layers x steps")


class ProjectionPanels(_Strict):
    layer: str
    image: str = Field(description="one panel per shown step, t-SNE initialised from the "
                                   "previous step's embedding")


class ProjectionDynamics(_Strict):
    method: str
    neighborhood_hit: Matrix = Field(description="[step][layer]")
    image: str | None = Field(default=None, description="heatmap, layers x steps")
    panels: list[ProjectionPanels] = Field(default_factory=list)


class InformationDynamics(_Strict):
    estimator: str
    I_XT: Matrix = Field(description="[step][layer], bits")
    I_TY: Matrix = Field(description="[step][layer], bits")
    compression: list[Compression]
    tolerance_bits: float = Field(description="smallest drop counted as compression (bits)")
    image: str | None = Field(default=None, description="trajectories on the information plane")


class SnrDynamics(_Strict):
    layers: list[str] = Field(description="the weighted layers")
    snr: Matrix = Field(description="[step][layer]: |mean gradient| / |element-wise std|")
    snr_norms: Matrix = Field(description="[step][layer]: mean / std of the gradient norm")
    image: str | None = None


class FilterDynamics(_Strict):
    layer: str
    frequencies: list[float]
    afr: list[list[float]] = Field(description="[step][frequency]: average frequency response")
    image: str | None = None


class DynamicsSection(_Strict):
    """``dynamics`` of report.json: a checkpoint series (``analyses`` describe its last
    checkpoint). Every matrix is ``[step][layer]`` over ``steps`` and ``layers``."""

    steps: list[int]
    checkpoints: list[str] = Field(description="the model file of each step")
    layers: list[str] = Field(description="layers common to every checkpoint, forward order")
    linear_probe: ProbeDynamics | None = None
    projection: ProjectionDynamics | None = None
    mutual_information: InformationDynamics | None = None
    gradient_snr: SnrDynamics | None = None
    filters: FilterDynamics | None = None
    note: str = ""


class Report(_Strict):
    """``report.json``. ``analyses`` maps a kind to its section, validated against the kind's
    section model when set (dicts in, dicts kept: the JSON document as written)."""

    layerlens_version: str
    model: ModelSection
    dataset: DatasetSection
    activations: ActivationsSection
    analyses: dict[str, Any] = Field(default_factory=dict)
    warnings: list[Warning_] = Field(
        default_factory=list, description="analyses or layers that failed; the rest stand")
    dynamics: DynamicsSection | None = Field(
        default=None, description="a checkpoint series: the analyses over training steps")

    @field_validator("analyses")
    @classmethod
    def _sections_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {kind: validate_section(kind, section) for kind, section in value.items()}

    def section(self, kind: str) -> BaseModel:
        """The typed section of ``kind`` (its model, or :class:`FailedAnalysis`)."""
        typed: BaseModel = _section_model(kind).validate_python(self.analyses[kind])
        return typed


def validate_section(kind: str, section: Any) -> dict[str, Any]:
    """``section`` (a model or a dict) checked against ``kind``'s section model, as JSON data."""
    if kind not in REGISTRY:
        raise ValueError(f"unknown analysis kind '{kind}'")
    if isinstance(section, BaseModel):
        section = section.model_dump(mode="json")
    try:
        typed = _section_model(kind).validate_python(section)
    except ValidationError as exc:
        raise ValueError(f"analyses.{kind}: {exc}") from exc
    dumped: dict[str, Any] = typed.model_dump(mode="json", exclude_none=False)
    return dumped


def _section_model(kind: str) -> TypeAdapter[Any]:
    return _section_adapter(kind, REGISTRY.version)


@functools.cache
def _section_adapter(kind: str, version: int) -> TypeAdapter[Any]:
    section: Any = REGISTRY[kind].section | FailedAnalysis
    return TypeAdapter(section)


def report_model() -> type[BaseModel]:
    """The report document with ``analyses`` typed by the registered kinds (for JSON schema)."""
    return _report_model_at(REGISTRY.version)


@functools.cache
def _report_model_at(version: int) -> type[BaseModel]:
    sections: Any = {kind.name: (kind.section | FailedAnalysis | None,
                                 Field(default=None, title=kind.title))
                     for kind in REGISTRY}
    analyses = create_model("Analyses", __config__=ConfigDict(extra="forbid"), **sections)
    return create_model("Report", __base__=_ReportHeader, analyses=(analyses, ...))


class _ReportHeader(_Strict):
    layerlens_version: str
    model: ModelSection
    dataset: DatasetSection
    activations: ActivationsSection
    warnings: list[Warning_] = Field(default_factory=list)
    dynamics: DynamicsSection | None = None
