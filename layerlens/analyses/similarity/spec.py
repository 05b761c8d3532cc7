"""The similarity analysis's spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import SpecEntry, Strict

#: Default CKA below which a layer counts as specific to its network (``compare_to``).
DEFAULT_THRESHOLD = 0.9
#: Default number of samples compared: memory holds Gram matrices of ``n^2`` float64 values.
DEFAULT_MAX_SAMPLES = 1000


class SimilaritySpec(SpecEntry):
    """``{"kind": "similarity", "method": "cka", "debiased": false}``: every layer against every
    layer, of this model or (job option ``compare_to``) of another one on the same samples."""

    kind: Literal["similarity"]
    method: Literal["cka"] = Field(default="cka", description="linear centred kernel alignment")
    debiased: bool = Field(default=False,
                           description="the unbiased HSIC estimator (Song et al. 2012) instead "
                                       "of the biased one")
    max_samples: int | None = Field(
        default=DEFAULT_MAX_SAMPLES, ge=4,
        description="compare a class-stratified subsample of at most this many samples "
                    "(memory grows as its square); null: every sample")
    threshold: float = Field(
        default=DEFAULT_THRESHOLD, gt=0.0, le=1.0,
        description="with compare_to: a layer whose best match in the other model has a lower "
                    "CKA counts as specific to this model")


class ComparedModel(Strict):
    """The other model of a comparison."""

    name: str = Field(description="its file name (CLI) or upload name (HTTP)")
    sha256: str
    format: str


class UndefinedLayer(Strict):
    """A layer whose row (model ``a``) or column (model ``b``) of the matrix is null, and why."""

    model: Literal["a", "b"]
    layer: str
    reason: str


class BestMatch(Strict):
    """A layer of this model and the layer of the other model most similar to it."""

    layer: str
    match: str | None = Field(description="null when no CKA of this layer is defined")
    cka: float | None


class SimilaritySection(Strict):
    """``analyses.similarity`` of report.json: ``matrix[i][j]`` is the CKA between
    ``layers_a[i]`` (this model) and ``layers_b[j]`` (this model again, or ``compared_to``)."""

    method: Literal["cka"]
    debiased: bool
    shown: str = Field(description="what the matrix shows, in one sentence")
    layers_a: list[str]
    layers_b: list[str]
    matrix: list[list[float | None]] = Field(
        description="rows layers_a, columns layers_b; null where CKA is undefined "
                    "(see undefined) or was not computed (complete false)")
    image: str | None
    compared_to: ComparedModel | None = Field(description="null: this model with itself")
    n_samples: int = Field(description="samples (the same rows for both models)")
    subsampled_from: int | None = Field(description="samples captured, when a subsample "
                                                    "was compared")
    seed: int
    undefined: list[UndefinedLayer]
    best_matches: list[BestMatch] | None = Field(
        description="with compare_to: each layer of this model and its most similar layer "
                    "of the other")
    threshold: float | None = Field(description="with compare_to: see specific_from")
    specific_from: str | None = Field(
        description="with compare_to: the first layer (forward order) whose best match is "
                    "below threshold, where the networks become specific; null if none is")
    complete: bool = Field(description="false when stopped before every pair was computed")
