"""The linear probe's report section: one probe per selected layer, fit together."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from layerlens.activation_store import LayerValues
from layerlens.analyses.base import AnalysisContext
from layerlens.analyses.linear_probe.figures import accuracy_figure
from layerlens.analyses.linear_probe.science import fit_linear_probes
from layerlens.analyses.linear_probe.spec import (
    LinearProbeSection,
    LinearProbeSpec,
    ProbeLayer,
)
from layerlens.analyses.sections import SkippedLayer
from layerlens.capture import LayerActivations
from layerlens.errors import InputError

#: One group of probes (its padded rows and solver state) may take this share of the
#: memory budget.
GROUP_SHARE_OF_BUDGET = 1 / 4


def run(spec: LinearProbeSpec, ctx: AnalysisContext) -> LinearProbeSection:
    """The ``analyses.linear_probe`` report section."""
    dataset = ctx.dataset
    if ctx.activations.n_samples < dataset.n_samples:  # capture was stopped early
        n = ctx.activations.n_samples
        dataset = replace(dataset, x=dataset.x[:n], y=dataset.y[:n])
    try:
        train, test = dataset.split(test_fraction=spec.test_fraction, seed=spec.seed)
    except ValueError as exc:
        raise InputError(f"linear_probe.test_fraction={spec.test_fraction} cannot split "
                         f"{dataset.n_samples} samples: {exc}") from exc
    chosen: list[LayerActivations] = ctx.layers(spec.layers)
    usable = [layer for layer in chosen if np.isfinite(layer.values).all()]
    results = fit_linear_probes(
        LayerValues(usable), dataset.y, train=train, test=test,
        n_classes=dataset.n_classes, device=ctx.device,
        group_bytes=max(1, int(ctx.activations.memory_budget * GROUP_SHARE_OF_BUDGET)),
        progress=lambda step, total, metrics: ctx.report_progress(step, total, **metrics),
    ) if usable else []
    by_name = dict(zip([layer.info.name for layer in usable], results, strict=True))
    rows: list[ProbeLayer | SkippedLayer] = []
    for layer in chosen:
        name = layer.info.name
        if name not in by_name:
            rows.append(SkippedLayer(layer=name,
                                     skipped="activations contain NaN or infinite values"))
            continue
        result = by_name[name]
        if result is None:
            rows.append(SkippedLayer(layer=name,
                                     skipped="stopped before this layer's probe was fit"))
            continue
        rows.append(ProbeLayer(layer=name, **asdict(result), reduction=None
                               if layer.reduction is None else layer.reduction.method))
    chance = float(np.bincount(dataset.y[test], minlength=dataset.n_classes).max() / len(test))
    probed = [row for row in rows if isinstance(row, ProbeLayer)]
    image = None
    if probed:
        figure = accuracy_figure([layer.info.name for layer in chosen], probed, chance)
        image = ctx.artifacts.png(figure, "linear_probe", "accuracy")
    return LinearProbeSection(
        layers=list(rows), image=image, test_fraction=float(spec.test_fraction),
        seed=int(spec.seed), C=1.0, n_train=len(train), n_test=len(test),
        chance_accuracy=chance)
