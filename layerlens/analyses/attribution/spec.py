"""The attribution spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from layerlens.analyses.sections import SpecEntry, Strict

Method = Literal["integrated_gradients", "gradient", "input_x_gradient"]
Baseline = Literal["zeros", "mean"]
Target = Literal["predicted", "label"]


class AttributionSpec(SpecEntry):
    """``{"kind": "attribution", ...}``: which input features drive the model's output.

    The attributed output is the model's last layer; ``layers`` (optional) picks another
    one, the last layer it matches (e.g. the logits before a softmax).
    """

    kind: Literal["attribution"]
    method: Method = Field(default="integrated_gradients",
                           description="integrated_gradients, gradient or input_x_gradient")
    steps: int = Field(default=64, ge=1, le=100_000,
                       description="integrated gradients: points along the path (rows per example)")
    baseline: Baseline = Field(
        default="zeros", description="integrated gradients: the path's start, zeros or the "
                                     "analysed samples' mean, in data units")
    examples_per_class: int = Field(default=2, ge=1,
                                    description="samples attributed per class (seeded draw)")
    max_examples: int = Field(default=32, ge=1,
                              description="at most this many samples: beyond it, a seeded "
                                          "draw of max_examples // examples_per_class classes")
    target: Target = Field(default="predicted",
                           description="output unit attributed: the predicted class (argmax) "
                                       "or the sample's label")

    @model_validator(mode="after")
    def _examples_fit(self) -> AttributionSpec:
        if self.max_examples < self.examples_per_class:
            raise ValueError(f"max_examples ({self.max_examples}) must be at least "
                             f"examples_per_class ({self.examples_per_class})")
        return self


class AttributedExample(Strict):
    """One attributed sample."""

    index: int = Field(description="row of the analysed samples")
    label: str = Field(description="the sample's class")
    target: int = Field(description="output unit attributed")
    target_label: str | None = Field(
        description="the class the target unit stands for, when the output has one unit "
                    "per class")
    predicted: int = Field(description="the output unit with the largest value")
    output: float = Field(description="F(x): the target unit's value on the sample")
    baseline_output: float | None = Field(
        description="F(baseline), integrated gradients only")
    attribution_sum: float = Field(description="sum of the attributions over input features")
    completeness_error: float | None = Field(
        description="integrated gradients: |sum - (F(x) - F(baseline))| / "
                    "max(|F(x) - F(baseline)|, 1e-12)")
    image: str = Field(description="the attribution drawn on the input (PNG)")
    array: str = Field(description="the attributions, shaped like one input (.npy, float32)")


class AttributionSection(Strict):
    """``analyses.attribution`` of report.json."""

    method: Method
    layer: str = Field(description="the layer whose target unit is attributed")
    target: Target
    steps: int | None = Field(description="integrated gradients: quadrature points")
    rule: Literal["gauss_legendre"] | None = Field(
        description="integrated gradients: the path integral's quadrature rule")
    baseline: Baseline | None = Field(description="integrated gradients: the path's start")
    examples_per_class: int
    max_examples: int
    classes: int = Field(description="classes the examples come from (all, unless "
                                     "max_examples limited them)")
    max_completeness_error: float | None = Field(
        description="integrated gradients: the largest completeness error of the examples")
    complete: bool = Field(description="False when stopped before every example ran")
    skipped: str | None = Field(default=None,
                                description="why nothing was attributed (no gradients, "
                                            "discrete input)")
    grid: str | None = Field(description="every example's attribution in one figure (PNG)")
    examples: list[AttributedExample]
