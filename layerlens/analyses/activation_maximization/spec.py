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
    steps: int | None = Field(
        default=None, ge=1, description="Adam steps; default 512, fewer for a big model "
                                        "(the section's plan says how many and why)")
    lr: float | None = Field(default=None, gt=0.0, description="Adam's; default 0.05")
    max_units: int | None = Field(
        default=None, ge=1, description="units per layer when units is None; default 8, "
                                        "fewer for a big model")
    max_layers: int = Field(
        default=16, ge=1, description="without layers: at most this many layers, spread "
                                      "evenly over depth; layers overrides it")
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


class RunPlan(Strict):
    """What the run optimised, and why (see :mod:`.plan`)."""

    candidate_layers: int = Field(description="selected layers that have units and gradients")
    optimised_layers: int
    units_per_layer: int = Field(description="a narrower layer gets all of its units")
    steps: int
    work: float = Field(description="activation element-steps: steps x the activation "
                                    "elements of each unit's forward pass up to its layer")
    budget: float = Field(description="the element-steps a default run may take")
    batches: int = Field(description="optimisation batches: one forward pass per step each, "
                                     "for every layer in the batch together")
    reason: str


class ActivationMaximizationSection(Strict):
    """``analyses.activation_maximization`` of report.json."""

    objective: Literal["channel", "neuron"]
    steps: int
    plan: RunPlan
    parametrization: Literal["fourier", "box"]
    lr: float
    complete: bool
    layers: list[MaximisedLayer | SkippedLayer | FailedLayer]
