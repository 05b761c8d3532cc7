"""The activation-maximisation report section: every selected layer's units, optimised."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from layerlens.analyses.activation_maximization.figures import (
    grid_figure,
    side_by_side,
    unit_figure,
)
from layerlens.analyses.activation_maximization.parametrization import (
    channel_decorrelation,
    data_range,
    is_image_shape,
)
from layerlens.analyses.activation_maximization.science import (
    DEFAULT_LR,
    PROGRESS_EVERY,
    Maximization,
    Objective,
    maximize_activation,
    objective_values,
    torch_normaliser,
)
from layerlens.analyses.activation_maximization.spec import (
    ActivationMaximizationSection,
    ActivationMaximizationSpec,
    MaximisedLayer,
    OptimisedUnit,
)
from layerlens.analyses.base import AnalysisContext
from layerlens.analyses.sections import FailedLayer, SkippedLayer
from layerlens.capture import LayerActivations
from layerlens.errors import GradientUnavailableError, InputError, is_allocation_failure, one_line

_BATCH = 256
_KIND = "activation_maximization"


def dataset_objective(ctx: AnalysisContext, captured: LayerActivations,
                      objective: Objective) -> np.ndarray:
    """Every unit's objective on every analysed sample: shape (n_samples, n_units).

    Uses the captured values when they hold the units (unreduced, or the
    spatial mean for the ``channel`` objective); otherwise runs the dataset
    through the model again for this layer.
    """
    info, reduction = captured.info, captured.reduction
    n = len(captured.values)
    if reduction is None:
        values = torch.from_numpy(captured.values.reshape((n, *info.shape)))
        return objective_values(values, objective).numpy().astype(np.float64)
    if reduction.method == "spatial_mean" and objective == "channel":
        return captured.values.astype(np.float64)
    spec = ctx.model.input_spec
    rows = []
    for start in range(0, n, _BATCH):
        batch = spec.preprocess(ctx.dataset.x[start:start + _BATCH])
        values = torch.from_numpy(ctx.model.capture(batch, [info.name])[info.name])
        rows.append(objective_values(values, objective).numpy().astype(np.float64))
    return np.concatenate(rows)


def _too_narrow(units: Sequence[int] | None, layers: Sequence[LayerActivations],
                ) -> dict[str, str]:
    """Layers that lack some of ``units``, each with the reason to skip it.

    Raises InputError for invalid ``units``, or when no selected layer has them all.
    """
    if units is None:
        return {}
    if not units:
        raise InputError("units must name at least one unit, or be omitted")
    if min(units) < 0:
        raise InputError(f"units must be >= 0, got {min(units)}")
    narrow = {c.info.name: f"too narrow for units: it has units 0..{c.info.shape[0] - 1}, "
                           f"units asks for {max(units)}"
              for c in layers if c.info.shape and max(units) >= c.info.shape[0]}
    widths = [c.info.shape[0] for c in layers if c.info.shape]
    if narrow and len(narrow) == len(widths):
        raise InputError(
            f"units: index {max(units)} is out of range for every selected layer (the widest "
            f"has {max(widths)} units, 0..{max(widths) - 1}); choose units, or layers with "
            "'layers'")
    return narrow


def _unit_seed(seed: int, layer_index: int, unit: int) -> int:
    return int(np.random.SeedSequence([seed, layer_index, unit]).generate_state(1)[0])



def _objective_label(shape: Sequence[int], objective: Objective) -> str:
    if len(shape) <= 1:
        return "unit"
    return "channel (spatial mean)" if objective == "channel" else "channel (centre neuron)"


def _layer_entry(ctx: AnalysisContext, spec: ActivationMaximizationSpec, index: int,
                 captured: LayerActivations, result: Maximization, units: Sequence[int],
                 scores: np.ndarray, samples: np.ndarray, low: np.ndarray,
                 high: np.ndarray) -> MaximisedLayer:
    name = captured.info.name
    what = _objective_label(captured.info.shape, spec.objective)
    entries = []
    for b, unit in enumerate(units):
        best = int(np.argmax(scores[:, unit]))
        label = ctx.dataset.class_names[int(ctx.dataset.y[best])]
        activation, best_value = float(result.activations[b]), float(scores[best, unit])
        parts = (_KIND, f"{index:02d}", name, f"unit{unit}")
        if is_image_shape(result.inputs[b].shape):
            image = ctx.artifacts.image(
                side_by_side(result.inputs[b], samples[best], low=low, high=high), *parts)
        else:
            image = ctx.artifacts.png(unit_figure(
                result.inputs[b], samples[best], low=low, high=high,
                title=f"layer {name}, {what} {unit}", activation=activation,
                example_value=best_value, example_label=label), *parts)
        entries.append(OptimisedUnit(
            unit=int(unit), activation=activation, dataset_max_activation=best_value,
            dataset_mean_activation=float(scores[:, unit].mean()),
            dataset_example_index=best, dataset_example_label=label, image=image,
            array=ctx.artifacts.npy(result.inputs[b], *parts)))
    grid = grid_figure(result.inputs, units, result.activations, low=low, high=high,
                       title=f"layer {name}: optimised input per {what}")
    return MaximisedLayer(layer=name, op=captured.info.op, steps_run=result.steps_run,
                          units=entries,
                          grid=ctx.artifacts.png(grid, _KIND, f"{index:02d}", name, "grid"))


def run(spec: ActivationMaximizationSpec, ctx: AnalysisContext) -> ActivationMaximizationSection:
    """The ``analyses.activation_maximization`` report section."""
    layers = ctx.layers(spec.layers)
    narrow = _too_narrow(spec.units, layers)
    input_spec = ctx.model.input_spec
    shape = tuple(input_spec.shape)
    image = is_image_shape(shape)
    section = ActivationMaximizationSection(
        objective=spec.objective, steps=spec.steps,
        parametrization="fourier" if image else "box",
        lr=spec.lr if spec.lr is not None else DEFAULT_LR["fourier" if image else "box"],
        complete=True, layers=[])
    if not ctx.model.differentiable:
        reason = ctx.model.gradient_error or "the model is not differentiable"
        section.layers = [SkippedLayer(layer=c.info.name, skipped=reason) for c in layers]
        return section

    samples = np.asarray(ctx.dataset.x, dtype=np.float32).reshape((-1, *shape))
    low, high = data_range(samples, shape)
    mixing = channel_decorrelation(samples, shape) if image else None
    normalise = torch_normaliser(input_spec, ctx.device)
    runnable = [c for c in layers if c.info.shape and c.info.name not in narrow
                and ctx.model.gradient_error_for(c.info.name) is None]
    chunks = math.ceil(spec.steps / PROGRESS_EVERY)
    total, done = chunks * len(runnable), 0
    stopping = False
    positions = {layer_name: i for i, layer_name in enumerate(ctx.model.layer_names)}
    for captured in layers:
        name = captured.info.name
        index = positions[name]  # the layer's place in the model: seeds and file names
        if stopping:
            section.layers.append(SkippedLayer(layer=name, skipped="stopped before this "
                                                                   "layer ran"))
            continue
        if not captured.info.shape:
            section.layers.append(SkippedLayer(layer=name, skipped="a scalar layer has no "
                                                                   "units to maximise"))
            continue
        if name in narrow:
            section.layers.append(SkippedLayer(layer=name, skipped=narrow[name]))
            continue
        no_gradients = ctx.model.gradient_error_for(name)
        if no_gradients is not None:
            section.layers.append(SkippedLayer(layer=name, skipped=f"no gradients: {no_gradients}"))
            continue
        offset = done
        done += chunks

        def report(step: int, metrics: dict[str, float], offset: int = offset,
                   index: int = index) -> bool:
            chunk = offset + math.ceil(step / PROGRESS_EVERY)
            return ctx.report_progress(chunk, total, layer=float(index), **metrics)

        def forward(x: torch.Tensor, name: str = name) -> torch.Tensor:
            return ctx.model.capture_torch(normalise(x), [name])[name]

        try:
            scores = dataset_objective(ctx, captured, spec.objective)
            units = (list(spec.units) if spec.units is not None
                     else [int(u) for u in np.argsort(-scores.mean(axis=0), kind="stable")
                           [:spec.max_units]])
            result = maximize_activation(
                forward, input_shape=shape, units=units,
                seeds=[_unit_seed(spec.seed, index, u) for u in units], low=low, high=high,
                objective=spec.objective, steps=spec.steps, lr=spec.lr, l2=spec.l2,
                blur_every=spec.blur_every, jitter=spec.jitter, mixing=mixing,
                device=ctx.device, progress=report)
            section.layers.append(_layer_entry(ctx, spec, index, captured, result, units,
                                               scores, samples, low, high))
        except GradientUnavailableError as exc:
            section.layers.append(SkippedLayer(layer=name, skipped=str(exc)))
            continue
        except InputError:
            raise
        except Exception as exc:
            if is_allocation_failure(exc):
                raise
            section.layers.append(FailedLayer(layer=name, failed=one_line(exc)))
            continue
        if result.stopped:
            stopping = True
            section.complete = False
    return section
