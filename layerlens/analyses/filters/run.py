"""The filters report section: the first convolution's weights and their frequency response."""

from __future__ import annotations

import numpy as np

from layerlens.analyses.base import AnalysisContext
from layerlens.analyses.filters.figures import (
    MAX_FILTERS,
    afr_figure,
    filter_curves_figure,
    filter_mosaic,
    response_2d_figure,
)
from layerlens.analyses.filters.science import afr_1d, conv_weight, response_2d
from layerlens.analyses.filters.spec import (
    DEFAULT_N_FFT_1D,
    DEFAULT_N_FFT_2D,
    FiltersSection,
    FiltersSpec,
)
from layerlens.models import select_layers

_KIND = "filters"
AVERAGED = ("the magnitude of each filter's zero-padded DFT, averaged over the output filters "
            "and their input channels")


def _empty(reason: str, *, layer: str | None = None, op: str | None = None) -> FiltersSection:
    return FiltersSection(layer=layer, op=op, dimensions=None, n_filters=0, in_channels=0,
                          kernel=[], n_fft=None, averaged=AVERAGED, frequencies=[], afr=[],
                          orientations=None, orientation_profile=None, filters_image=None,
                          response_image=None, skipped=reason)


def run(spec: FiltersSpec, ctx: AnalysisContext) -> FiltersSection:
    """The ``analyses.filters`` report section."""
    model = ctx.model
    weights = model.weights()
    weighted = [layer for layer in select_layers(model.layers, spec.layers)
                if layer.name in weights]
    if not weighted:
        return _empty("no convolution: the model exposes no weighted layer"
                      + (" among those selected" if spec.layers else ""))
    layer = weighted[0]
    tensors = {name: t.detach().cpu().numpy() for name, t in weights[layer.name].items()}
    kernel = conv_weight(tensors, layer.op)
    if kernel is None or kernel.ndim > 4:
        what = ("not a convolution" if kernel is None
                else f"a {kernel.ndim - 2}-D convolution (filters are drawn for 1-D and 2-D)")
        return _empty(f"the first weighted layer '{layer.name}' ({layer.op}) is {what}; "
                      "pick a convolution with 'layers'", layer=layer.name, op=layer.op)
    dimensions = kernel.ndim - 2
    n_fft = spec.n_fft or (DEFAULT_N_FFT_1D if dimensions == 1 else DEFAULT_N_FFT_2D)
    if n_fft < max(kernel.shape[2:]):
        n_fft = int(2 ** np.ceil(np.log2(max(kernel.shape[2:]))))
    section = _empty("", layer=layer.name, op=layer.op)
    section.skipped = None
    section.dimensions = 1 if dimensions == 1 else 2
    section.n_filters, section.in_channels = int(kernel.shape[0]), int(kernel.shape[1])
    section.kernel, section.n_fft = [int(k) for k in kernel.shape[2:]], n_fft
    shown = (f"first {MAX_FILTERS} of " if len(kernel) > MAX_FILTERS else "") + \
        f"{len(kernel)} filters"
    title = f"'{layer.name}' ({layer.op}), {shown}"
    if dimensions == 1:
        frequencies, afr = afr_1d(kernel, n_fft=n_fft)
        section.filters_image = ctx.artifacts.png(
            filter_curves_figure(kernel, title=f"{title}, input channels averaged"),
            _KIND, "curves")
        section.response_image = ctx.artifacts.png(
            afr_figure(frequencies, afr, title=f"Average frequency response of '{layer.name}'"),
            _KIND, "afr")
    else:
        response = response_2d(kernel, n_fft=n_fft)
        frequencies, afr = response.frequencies, response.radial
        section.orientations = [float(v) for v in response.orientations]
        section.orientation_profile = [float(v) for v in response.by_orientation]
        section.filters_image = ctx.artifacts.image(filter_mosaic(kernel), _KIND, "images")
        section.response_image = ctx.artifacts.png(
            response_2d_figure(response, title=f"Average frequency response of {title}"),
            _KIND, "afr")
    section.frequencies = [float(v) for v in frequencies]
    section.afr = [float(v) for v in afr]
    ctx.report_progress(1, 1)
    return section
