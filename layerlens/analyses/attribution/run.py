"""The attribution report section: a few examples per class, attributed and drawn."""

from __future__ import annotations

import numpy as np
import torch

from layerlens.analyses.activation_maximization.science import torch_normaliser
from layerlens.analyses.attribution.figures import example_figure, grid_figure, is_image, overlay
from layerlens.analyses.attribution.science import Attribution, attribute, pick_examples, predict
from layerlens.analyses.attribution.spec import (
    AttributedExample,
    AttributionSection,
    AttributionSpec,
)
from layerlens.analyses.base import AnalysisContext
from layerlens.capture import fitting_batch_size
from layerlens.errors import GradientUnavailableError, InputError
from layerlens.models import ProbedModel, select_layers
from layerlens.models.base import LayerInfo
from layerlens.options import DEFAULT_MEMORY_BUDGET

_KIND = "attribution"
#: Most rows (path points) in one forward/backward batch.
MAX_ROWS = 1024
#: A backward pass keeps every layer's activations and their gradients: the rows of one
#: batch may take this fraction of what :func:`fitting_batch_size` allows a forward batch.
BACKWARD_SHARE = 1 / 3


def _output_layer(model: ProbedModel, patterns: list[str] | None) -> LayerInfo:
    """The model's last layer, or the last one ``patterns`` match."""
    chosen = select_layers(model.layers, patterns)
    if not chosen:
        raise InputError("the model lists no layers, so there is no output to attribute")
    return chosen[-1]


def _why_skipped(model: ProbedModel, layer: LayerInfo) -> str | None:
    """Why ``layer`` cannot be attributed: no gradients to it (the whole model, or only
    this layer and those computed from it), or a discrete input."""
    reason = model.gradient_error_for(layer.name)
    if reason is not None:
        return reason
    dtype = np.dtype(model.input_spec.dtype)
    if dtype.kind != "f":
        return (f"the model takes discrete input ({dtype}): attributions need gradients "
                "with respect to a continuous input")
    return None


def _targets(spec: AttributionSpec, ctx: AnalysisContext, layer: LayerInfo,
             outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if spec.target == "predicted":
        return np.asarray(outputs.argmax(axis=1), dtype=np.int64)
    if outputs.shape[1] != ctx.dataset.n_classes:
        raise InputError(
            f"target 'label' needs one output unit per class ({ctx.dataset.n_classes}); "
            f"layer '{layer.name}' has {outputs.shape[1]}: use target 'predicted' or pick "
            "another layer with 'layers'", options=("target",))
    return labels


def _examples(ctx: AnalysisContext, result: Attribution, picked: np.ndarray,
              x: np.ndarray, outputs: np.ndarray, targets: np.ndarray,
              ) -> tuple[list[AttributedExample], str | None]:
    """The report rows (writing each example's picture and array) and the grid's name
    (None without examples)."""
    names = ctx.dataset.class_names
    per_class = outputs.shape[1] == len(names)
    low, high = float(ctx.dataset.x.min()), float(ctx.dataset.x.max())
    rows, captions = [], []
    for i, attribution in enumerate(result.attributions):
        index, target = int(picked[i]), int(targets[i])
        label = names[int(ctx.dataset.y[index])]
        target_label = names[target] if per_class else None
        caption = f"#{index} {label}\u2192{target_label if per_class else target}"
        captions.append(caption)
        parts = (_KIND, f"example{index:05d}")
        if is_image(attribution.shape):
            image = ctx.artifacts.image(overlay(x[i], attribution, low=low, high=high), *parts)
        else:
            image = ctx.artifacts.png(example_figure(attribution, title=caption), *parts)
        rows.append(AttributedExample(
            index=index, label=label, target=target, target_label=target_label,
            predicted=int(outputs[i].argmax()), output=float(result.outputs[i]),
            baseline_output=(None if result.baseline_outputs is None
                             else float(result.baseline_outputs[i])),
            attribution_sum=float(attribution.sum()),
            completeness_error=(None if result.completeness_error is None
                                else float(result.completeness_error[i])),
            image=image, array=ctx.artifacts.npy(attribution.astype(np.float32), *parts)))
    n = len(rows)
    if n == 0:
        return rows, None
    grid = grid_figure(x[:n], result.attributions, captions, low=low, high=high,
                       title="attribution per example (sample #, label \u2192 target)")
    return rows, ctx.artifacts.png(grid, _KIND, "grid")


def run(spec: AttributionSpec, ctx: AnalysisContext) -> AttributionSection:
    """The ``analyses.attribution`` report section."""
    model = ctx.model
    layer = _output_layer(model, spec.layers)
    integrated = spec.method == "integrated_gradients"
    section = AttributionSection(
        method=spec.method, layer=layer.name, target=spec.target,
        steps=spec.steps if integrated else None, rule="gauss_legendre" if integrated else None,
        baseline=spec.baseline if integrated else None,
        examples_per_class=spec.examples_per_class, max_examples=spec.max_examples,
        classes=0, max_completeness_error=None, complete=True, grid=None, examples=[])
    section.skipped = _why_skipped(model, layer)
    if section.skipped is not None:
        return section

    shape = tuple(model.input_spec.shape)
    samples = np.asarray(ctx.dataset.x, dtype=np.float32).reshape((-1, *shape))
    picked = pick_examples(ctx.dataset.y, spec.examples_per_class,
                           max_examples=spec.max_examples, seed=spec.seed)
    section.classes = len(np.unique(ctx.dataset.y[picked]))
    x = samples[picked]
    normalise = torch_normaliser(model.input_spec, ctx.device)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return model.capture_torch(normalise(batch), [layer.name])[layer.name]

    max_rows = fitting_batch_size(model.layers, MAX_ROWS,
                                  int(DEFAULT_MEMORY_BUDGET * BACKWARD_SHARE))
    try:
        outputs = predict(forward, x, max_rows=max_rows, device=ctx.device)
        targets = _targets(spec, ctx, layer, outputs, ctx.dataset.y[picked])
        baseline = (samples.mean(axis=0) if spec.baseline == "mean"
                    else np.zeros(shape, np.float32))
        result = attribute(forward, x, targets, method=spec.method, steps=spec.steps,
                           baseline=baseline, max_rows=max_rows, device=ctx.device,
                           progress=lambda done, total: ctx.report_progress(done, total))
    except GradientUnavailableError as exc:
        section.skipped = str(exc)
        return section
    section.complete = not result.stopped
    section.examples, section.grid = _examples(ctx, result, picked, x, outputs, targets)
    if result.completeness_error is not None and len(result.completeness_error):
        section.max_completeness_error = float(result.completeness_error.max())
    return section
