"""The linear probe's spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import FailedLayer, SkippedLayer, SpecEntry, Strict


class LinearProbeSpec(SpecEntry):
    """``{"kind": "linear_probe", ...}``: one logistic-regression probe per layer."""

    kind: Literal["linear_probe"]
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0,
                                 description="share of the samples held out for testing")


class ProbeLayer(Strict):
    """One probed layer."""

    layer: str
    train_accuracy: float = Field(ge=0.0, le=1.0)
    test_accuracy: float = Field(ge=0.0, le=1.0)
    train_loss: float = Field(description="objective / n_train: mean cross-entropy (nats) + L2")
    grad_norm: float = Field(ge=0.0, description="largest |gradient entry| at the probe")
    iterations: int = Field(ge=0)
    converged: bool
    n_features: int = Field(ge=1)
    reduction: Literal["spatial_mean", "random_projection", "sequence_mean", "sequence_first",
                       "sequence_last"] | None = None


class LinearProbeSection(Strict):
    """``analyses.linear_probe`` of report.json."""

    layers: list[ProbeLayer | SkippedLayer | FailedLayer]
    image: str | None
    test_fraction: float
    seed: int
    C: float
    n_train: int
    n_test: int
    chance_accuracy: float = Field(description="majority class share of the test split")
