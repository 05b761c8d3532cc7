"""The activation-maximisation spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import FailedLayer, SkippedLayer, SpecEntry, Strict


class ActivationMaximizationSpec(SpecEntry):
    """``{"kind": "activation_maximization", ...}``: the input that most excites each unit."""

    kind: Literal["activation_maximization"]
    units: list[int] | None = Field(default=None,
                                    description="unit indices; default the most active few")
    objective: Literal["channel", "neuron"] = Field(
        default="channel", description="channel: spatial mean; neuron: centre position")
    steps: int = Field(default=512, ge=1)
    lr: float | None = Field(default=None, gt=0.0, description="Adam's; default 0.05")
    max_units: int = Field(default=8, ge=1, description="units per layer when units is None")
    l2: float = Field(default=0.0, ge=0.0, description="L2 decay weight (Yosinski et al. 2015)")
    blur_every: int = Field(default=0, ge=0, description="blur images every N steps (0: never)")
    jitter: int | None = Field(default=None, ge=0, description="pixels (None: by image size)")


class OptimisedUnit(Strict):
    unit: int
    activation: float = Field(description="the unit's objective on its optimised input")
    dataset_max_activation: float
    dataset_mean_activation: float
    dataset_example_index: int = Field(description="the sample reaching dataset_max_activation")
    dataset_example_label: str
    image: str = Field(description="optimised input beside that sample (PNG)")
    array: str = Field(description="the optimised input, data units (.npy)")


class MaximisedLayer(Strict):
    layer: str
    op: str
    steps_run: int
    units: list[OptimisedUnit]
    grid: str = Field(description="every optimised input of the layer (PNG)")


class ActivationMaximizationSection(Strict):
    """``analyses.activation_maximization`` of report.json."""

    objective: Literal["channel", "neuron"]
    steps: int
    parametrization: Literal["fourier", "box"]
    lr: float
    complete: bool
    layers: list[MaximisedLayer | SkippedLayer | FailedLayer]
