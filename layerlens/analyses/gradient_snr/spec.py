"""The gradient SNR spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import FailedLayer, SkippedLayer, SpecEntry, Strict

#: What the gradients are gradients of, as the report states it.
LOSS = ("cross-entropy of the model's output (taken as logits; log-probabilities after a "
        "Softmax or LogSoftmax output) against the labels, averaged over the mini-batch")


class GradientSnrSpec(SpecEntry):
    """``{"kind": "gradient_snr", "batch_size": 32, "n_batches": 8}``: the loss gradient of
    each weighted layer on ``n_batches`` seeded mini-batches; ``layers`` picks among the
    weighted layers (convolutions and matrix products)."""

    kind: Literal["gradient_snr"]
    batch_size: int = Field(default=32, ge=1, le=65_536,
                            description="samples per mini-batch (at most the samples analysed)")
    n_batches: int = Field(default=8, ge=2, le=10_000,
                           description="mini-batches, each a seeded draw without replacement")


class GradientSnrLayer(Strict):
    """One weighted layer: its weights' loss gradient over the mini-batches."""

    layer: str
    n_weights: int = Field(description="weights and biases of the layer, taken together")
    gradient_norm: float = Field(description="mean over mini-batches of ||g_b||")
    snr: float | None = Field(
        description="||mean_b g_b|| / ||std_b g_b|| (element-wise std over mini-batches, "
                    "Shwartz-Ziv & Tishby); null when the std is 0")
    snr_norms: float | None = Field(
        description="mean_b ||g_b|| / std_b ||g_b||; null when the std is 0")


class GradientSnrSection(Strict):
    """``analyses.gradient_snr`` of report.json."""

    loss: str = Field(description="what is differentiated, in one sentence")
    output_layer: str | None = Field(description="the layer the loss is computed from")
    batch_size: int = Field(description="samples per mini-batch (as used)")
    n_batches: int = Field(description="mini-batches whose gradients were taken")
    seed: int
    skipped: str | None = Field(default=None,
                                description="why no layer was analysed (no weights exposed, "
                                            "output not one logit per class)")
    complete: bool = Field(description="false when stopped before every mini-batch ran")
    image: str | None = Field(description="both ratios per layer (PNG)")
    layers: list[GradientSnrLayer | SkippedLayer | FailedLayer]
