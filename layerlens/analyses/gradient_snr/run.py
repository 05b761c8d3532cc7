"""The gradient SNR report section: each weighted layer's loss gradient over mini-batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from layerlens.analyses.base import AnalysisContext
from layerlens.analyses.gradient_snr.figures import snr_by_layer_figure
from layerlens.analyses.gradient_snr.science import (
    MiniBatch,
    draw_batches,
    gradient_moments,
    log_probabilities,
)
from layerlens.analyses.gradient_snr.spec import (
    LOSS,
    GradientSnrLayer,
    GradientSnrSection,
    GradientSnrSpec,
)
from layerlens.analyses.sections import SkippedLayer
from layerlens.capture import fitting_batch_size
from layerlens.errors import GradientUnavailableError
from layerlens.models import ProbedModel, select_layers
from layerlens.options import DEFAULT_MEMORY_BUDGET

#: A backward pass keeps every layer's activations and their gradients: a chunk of a
#: mini-batch may take this fraction of what :func:`fitting_batch_size` allows a forward one.
BACKWARD_SHARE = 1 / 3


def _why_not(model: ProbedModel, n_classes: int) -> str | None:
    """Why the loss cannot be taken: the output is not one logit per class."""
    output = model.layers[-1]
    if output.shape != (n_classes,):
        return (f"the loss needs one output logit per class ({n_classes}); the model's output "
                f"'{output.name}' has shape {output.shape}")
    return None


def run(spec: GradientSnrSpec, ctx: AnalysisContext) -> GradientSnrSection:
    """The ``analyses.gradient_snr`` report section."""
    model, dataset = ctx.model, ctx.dataset
    output = model.layers[-1]
    chosen = {layer.name for layer in select_layers(model.layers, spec.layers)}
    weights = {name: list(tensors.values()) for name, tensors in model.weights().items()
               if name in chosen}
    batch_size = min(spec.batch_size, dataset.n_samples)
    section = GradientSnrSection(loss=LOSS, output_layer=output.name, batch_size=batch_size,
                                 n_batches=0, seed=spec.seed, complete=True, image=None,
                                 layers=[])
    section.skipped = _why_not(model, dataset.n_classes) or (
        None if weights else "no weighted layer (convolution or matrix product) with weights "
                             "the model exposes" + (" among those selected" if spec.layers
                                                    else ""))
    if section.skipped is not None:
        return section
    reason = model.gradient_error_for(output.name)
    if reason is not None:
        section.layers = [SkippedLayer(layer=name, skipped=f"no gradients: {reason}")
                          for name in weights]
        return section

    rows = draw_batches(dataset.n_samples, batch_size, spec.n_batches, seed=spec.seed)

    chunk = fitting_batch_size(model.layers, batch_size,
                               int(DEFAULT_MEMORY_BUDGET * BACKWARD_SHARE))

    def batches() -> Iterator[MiniBatch]:
        for index in rows:
            x = torch.from_numpy(model.input_spec.preprocess(dataset.x[index])).to(ctx.device)
            y = torch.from_numpy(np.asarray(dataset.y[index], np.int64)).to(ctx.device)
            yield [(x[i:i + chunk], y[i:i + chunk]) for i in range(0, len(index), chunk)]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return log_probabilities(model.capture_torch(x, [output.name])[output.name], output.op)

    done = 0

    def progress(batches_done: int) -> bool:
        nonlocal done
        done = batches_done
        return ctx.report_progress(batches_done, len(rows))

    try:
        moments, unused = gradient_moments(forward, weights, batches(), progress=progress)
    except GradientUnavailableError as exc:
        section.layers = [SkippedLayer(layer=name, skipped=f"no gradients: {exc}")
                          for name in weights]
        return section
    section.n_batches, section.complete = done, done == len(rows)
    for name in weights:
        if name in unused:
            section.layers.append(SkippedLayer(layer=name, skipped=unused[name]))
            continue
        m = moments[name]
        snr, snr_norms = m.ratios() if m.count >= 2 else (None, None)
        section.layers.append(GradientSnrLayer(
            layer=name, n_weights=sum(t.numel() for t in weights[name]),
            gradient_norm=float(np.mean(m.norms)), snr=snr, snr_norms=snr_norms))
    rows_done = [row for row in section.layers if isinstance(row, GradientSnrLayer)]
    if rows_done:
        figure = snr_by_layer_figure(
            [r.layer for r in rows_done], [r.snr for r in rows_done],
            [r.snr_norms for r in rows_done],
            title=f"Gradient SNR per weighted layer ({done} mini-batches of {batch_size})")
        section.image = ctx.artifacts.png(figure, "gradient_snr")
    return section
