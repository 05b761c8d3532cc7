"""The filters spec entry and report section (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from layerlens.analyses.sections import SpecEntry, Strict

#: Default DFT lengths: 1-D filters, and each axis of 2-D filters.
DEFAULT_N_FFT_1D = 256
DEFAULT_N_FFT_2D = 64


class FiltersSpec(SpecEntry):
    """``{"kind": "filters"}``: the first convolution's weights and their average frequency
    response; ``layers`` picks another convolution (the first weighted layer it matches)."""

    kind: Literal["filters"]
    n_fft: int | None = Field(
        default=None, ge=8, le=4096,
        description=f"DFT length the filters are zero-padded to (per axis for 2-D filters); "
                    f"null: {DEFAULT_N_FFT_1D} (1-D), {DEFAULT_N_FFT_2D} (2-D)")


class FiltersSection(Strict):
    """``analyses.filters`` of report.json."""

    layer: str | None = Field(description="the convolution drawn")
    op: str | None = Field(description="its module type or ONNX operator")
    dimensions: Literal[1, 2] | None = Field(description="1: curves (k taps); 2: images")
    n_filters: int = Field(description="output filters C")
    in_channels: int = Field(description="input channels per filter")
    kernel: list[int] = Field(description="kernel size per spatial axis")
    n_fft: int | None = Field(description="DFT length (per axis)")
    averaged: str = Field(description="how the response is averaged, in one sentence")
    frequencies: list[float] = Field(
        description="normalised frequency, cycles per sample, 0..0.5 in steps of 1/n_fft "
                    "(2-D: the radius |(f_x, f_y)|)")
    afr: list[float] = Field(
        description="average magnitude response (1/C) sum_c |H_c(f)| at each frequency "
                    "(2-D: averaged over each ring of radius f)")
    orientations: list[float] | None = Field(
        description="2-D: centres of the orientation bins, degrees in [0, 180), the angle of "
                    "(f_x, f_y) from the kernel's column axis towards its row axis")
    orientation_profile: list[float] | None = Field(
        description="2-D: mean magnitude per orientation bin over 0 < |f| <= 0.5")
    filters_image: str | None = Field(description="the filters as images or curves (PNG)")
    response_image: str | None = Field(
        description="the average response (2-D: with the mean spectrum and orientation "
                    "profile) (PNG)")
    skipped: str | None = Field(default=None,
                                description="why no filters were drawn (no convolution)")
