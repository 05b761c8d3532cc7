"""The mutual-information spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import FailedLayer, SkippedLayer, SpecEntry, Strict


class MutualInformationSpec(SpecEntry):
    """``{"kind": "mutual_information", ...}``: I(X;T) and I(T;Y) per layer, in bits.

    The default estimator is ``kde`` with the noise variance relative to each
    layer's scale; ``n_bins`` (default 30) applies to ``binning`` and
    ``adaptive`` only, so ``{"estimator": "binning"}`` means 30 equal-width bins.
    """

    kind: Literal["mutual_information"]
    estimator: Literal["binning", "adaptive", "kde", "ksg"] = Field(
        default="kde", description="kde (default): Gaussian-noise bound with noise relative to "
                                   "each layer's scale; binning, adaptive: bins; ksg: I(T;Y) "
                                   "only, nearest neighbours")
    n_bins: int = Field(default=30, ge=2, description="bins per unit (binning, adaptive; "
                                                      "unused by kde and ksg)")
    bin_range: Literal["observed"] | tuple[float, float] = Field(
        default="observed", description='"observed" (each layer\'s [min, max]) or [lo, hi]')
    noise_variance: float | None = Field(
        default=None, gt=0.0, description="kde: variance of the added noise; default 0.1 x "
                                          "the layer's total variance")


class InformationLayer(Strict):
    """One layer's estimates (bits); which extra keys appear depends on the estimator."""

    layer: str
    I_XT: float | None = Field(description="null for ksg: I(X;T) is not defined there")
    I_TY: float
    saturated: bool = Field(description="I(X;T) within 1% of log2 N: the estimator only sees "
                                        "that distinct inputs stay distinct")
    n_features: int
    n_symbols: int | None = Field(default=None, description="binning: distinct binned vectors")
    bin_lo: float | None = None
    bin_hi: float | None = None
    distinct_edges: int | None = Field(
        default=None, description="binning, adaptive: distinct inner bin edges (fewer than "
                                  "n_bins - 1 where bins would be narrower than the values' "
                                  "float32 resolution)")
    noise_variance: float | None = Field(default=None, description="kde: the variance used")
    I_TY_raw_nats: float | None = Field(default=None, description="ksg: before clipping at 0")
    constant_units: int = Field(
        default=0, description="units constant over the samples at float32 resolution (range "
                               "within 1024 float32 spacings of their magnitude), taken as "
                               "exactly constant")
    constant: bool = Field(
        default=False, description="every unit constant at float32 resolution: the layer "
                                   "carries 0 bits by construction, not by measurement")


class Parameters(Strict):
    n_bins: int
    bin_range: Literal["observed"] | list[float]
    noise_variance: float | None
    k: int | None
    seed: int


class MutualInformationSection(Strict):
    """``analyses.mutual_information`` of report.json."""

    estimator: Literal["binning", "adaptive", "kde", "ksg"]
    units: Literal["bits"]
    n_samples: int
    n_distinct_inputs: int
    H_X: float
    H_Y: float
    log2_N: float
    parameters: Parameters
    layers: list[InformationLayer | SkippedLayer | FailedLayer]
    image: str
    note: str
    complete: bool
