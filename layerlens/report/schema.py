"""The report document (``report.json``), identical from the CLI and the API.

Every number is plain JSON; every ``image`` names an artifact relative to
the report's folder. Later analyses add keys under ``analyses``; nothing
here changes meaning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerEntry(_Strict):
    name: str
    op: str = Field(description="module type (TorchScript) or ONNX operator")
    shape: list[int] = Field(description="output shape of one sample")


class ModelSection(_Strict):
    sha256: str
    format: Literal["onnx", "torchscript"]
    input_shape: list[int]
    differentiable: bool
    gradient_note: str | None = Field(
        default=None, description="why gradient-based analyses cannot run, when they cannot")
    layers: list[LayerEntry]


class DatasetSection(_Strict):
    ref: str
    n_samples: int = Field(description="samples analysed (after --max-samples)")
    n_classes: int
    n_total: int = Field(description="samples in the dataset before subsampling")


class ReductionEntry(_Strict):
    method: Literal["spatial_mean", "random_projection"]
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


class Report(_Strict):
    layerlens_version: str
    model: ModelSection
    dataset: DatasetSection
    activations: ActivationsSection
    analyses: dict[str, Any] = Field(default_factory=dict)
