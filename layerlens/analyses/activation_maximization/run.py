"""The activation-maximisation report section: every selected layer's units, optimised."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from layerlens.analyses.activation_maximization.figures import (
    grid_figure,
    side_by_side,
    unit_figure,
)
from layerlens.analyses.activation_maximization.joint import (
    CHUNK_BYTES,
    Target,
    chunk_targets,
    joint_score,
)
from layerlens.analyses.activation_maximization.parametrization import (
    channel_decorrelation,
    data_range,
    is_image_shape,
)
from layerlens.analyses.activation_maximization.plan import WORK_BUDGET, Plan, plan_run
from layerlens.analyses.activation_maximization.science import (
    DEFAULT_LR,
    PROGRESS_EVERY,
    Maximization,
    Objective,
    maximize_objectives,
    objective_values,
    torch_normaliser,
)
from layerlens.analyses.activation_maximization.spec import (
    ActivationMaximizationSection,
    ActivationMaximizationSpec,
    MaximisedLayer,
    OptimisedUnit,
    RunPlan,
)
from layerlens.analyses.base import AnalysisContext
from layerlens.analyses.sections import FailedLayer, SkippedLayer
from layerlens.capture import LayerActivations
from layerlens.errors import InputError, is_allocation_failure, one_line

_BATCH = 256
_KIND = "activation_maximization"


def dataset_objectives(ctx: AnalysisContext, layers: Sequence[LayerActivations],
                       objective: Objective) -> dict[str, np.ndarray]:
    """Every unit's objective on every analysed sample: ``name -> (n_samples, n_units)``.

    Uses the captured values when they hold the units (unreduced, or the
    spatial mean for the ``channel`` objective); the other layers are
    recomputed together, one forward pass per batch of samples for all of them.
    """
    scores: dict[str, np.ndarray] = {}
    again: list[str] = []
    for captured in layers:
        info, reduction = captured.info, captured.reduction
        n = len(captured.values)
        if reduction is None:  # rows copied in batches: values may be a read-only memory map
            scores[info.name] = np.concatenate([
                objective_values(torch.from_numpy(np.array(
                    captured.values[i:i + _BATCH]).reshape((-1, *info.shape))), objective)
                .numpy().astype(np.float64) for i in range(0, n, _BATCH)])
        elif reduction.method == "spatial_mean" and objective == "channel":
            scores[info.name] = captured.values.astype(np.float64)
        else:
            again.append(info.name)
    if not again:
        return scores
    spec = ctx.model.input_spec
    per_sample = sum(ctx.model.layer(name).n_features for name in again)
    batch = int(max(1, min(_BATCH, CHUNK_BYTES // (4 * per_sample))))
    rows: dict[str, list[np.ndarray]] = {name: [] for name in again}
    for start in range(0, len(ctx.dataset.x), batch):
        found = ctx.model.capture(spec.preprocess(ctx.dataset.x[start:start + batch]), again)
        for name in again:
            rows[name].append(objective_values(torch.from_numpy(found[name]), objective)
                              .numpy().astype(np.float64))
    scores.update({name: np.concatenate(parts) for name, parts in rows.items()})
    return scores


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


def _skip_reasons(ctx: AnalysisContext, layers: Sequence[LayerActivations],
                  narrow: dict[str, str]) -> dict[str, str]:
    """Layers that cannot be optimised, each with the reason: scalar, too narrow, no gradients."""
    reasons = {}
    for captured in layers:
        name = captured.info.name
        no_gradients = ctx.model.gradient_error_for(name)
        if not captured.info.shape:
            reasons[name] = "a scalar layer has no units to maximise"
        elif name in narrow:
            reasons[name] = narrow[name]
        elif no_gradients is not None:
            reasons[name] = f"no gradients: {no_gradients}"
    return reasons


def _constant_layers(ctx: AnalysisContext, names: Sequence[str],
                     normalise: Callable[[torch.Tensor], torch.Tensor]) -> set[str]:
    """Layers whose output does not depend differentiably on the input (one forward pass)."""
    probe = torch.zeros((1, *ctx.model.input_spec.shape), device=ctx.device,
                        requires_grad=True)
    outputs = ctx.model.capture_torch(normalise(probe), list(names))
    return {name for name, value in outputs.items() if not value.requires_grad}


def _chosen_units(spec: ActivationMaximizationSpec, scores: np.ndarray, count: int
                  ) -> list[int]:
    if spec.units is not None:
        return list(spec.units)
    return [int(u) for u in np.argsort(-scores.mean(axis=0), kind="stable")[:count]]


def _plan_entry(plan: Plan, candidates: int, batches: int) -> RunPlan:
    return RunPlan(candidate_layers=candidates, optimised_layers=len(plan.layers),
                   units_per_layer=plan.units, steps=plan.steps, work=plan.work,
                   budget=WORK_BUDGET, batches=batches, reason=plan.reason)


def run(spec: ActivationMaximizationSpec, ctx: AnalysisContext) -> ActivationMaximizationSection:
    """The ``analyses.activation_maximization`` report section.

    The units of every optimised layer run together (see :mod:`.joint`): one
    forward pass per step per batch, batches cut by depth and memory.
    """
    layers = ctx.layers(spec.layers)
    narrow = _too_narrow(spec.units, layers)
    input_spec = ctx.model.input_spec
    shape = tuple(input_spec.shape)
    image = is_image_shape(shape)
    skips = _skip_reasons(ctx, layers, narrow) if ctx.model.differentiable else {
        c.info.name: ctx.model.gradient_error or "the model is not differentiable"
        for c in layers}
    candidates = [c for c in layers if c.info.name not in skips]
    positions = {name: i for i, name in enumerate(ctx.model.layer_names)}
    depth_cost = np.cumsum([info.n_features for info in ctx.model.layers], dtype=np.float64)
    plan = plan_run([float(depth_cost[positions[c.info.name]]) for c in candidates],
                    [c.info.shape[0] for c in candidates], layers_named=spec.layers is not None,
                    max_layers=spec.max_layers,
                    units=len(spec.units) if spec.units is not None else spec.max_units,
                    steps=spec.steps)
    chosen = [candidates[i] for i in plan.layers]
    section = ActivationMaximizationSection(
        objective=spec.objective, steps=plan.steps, plan=_plan_entry(plan, len(candidates), 0),
        parametrization="fourier" if image else "box",
        lr=spec.lr if spec.lr is not None else DEFAULT_LR["fourier" if image else "box"],
        complete=True, layers=[])
    outcome: dict[str, MaximisedLayer | SkippedLayer | FailedLayer] = {
        name: SkippedLayer(layer=name, skipped=reason) for name, reason in skips.items()}
    if chosen:
        section.complete = _optimise(spec, ctx, chosen, plan, section, outcome)
    section.layers = [outcome[c.info.name] for c in layers if c.info.name in outcome]
    return section


def _optimise(spec: ActivationMaximizationSpec, ctx: AnalysisContext,
              chosen: Sequence[LayerActivations], plan: Plan,
              section: ActivationMaximizationSection,
              outcome: dict[str, MaximisedLayer | SkippedLayer | FailedLayer]) -> bool:
    """Optimise ``chosen`` together, filling ``outcome`` per layer; False when stopped."""
    input_spec = ctx.model.input_spec
    shape = tuple(input_spec.shape)
    samples = np.asarray(ctx.dataset.x, dtype=np.float32).reshape((-1, *shape))
    low, high = data_range(samples, shape)
    mixing = channel_decorrelation(samples, shape) if is_image_shape(shape) else None
    normalise = torch_normaliser(input_spec, ctx.device)
    positions = {name: i for i, name in enumerate(ctx.model.layer_names)}
    depth_cost = np.cumsum([info.n_features for info in ctx.model.layers], dtype=np.float64)
    constant = _constant_layers(ctx, [c.info.name for c in chosen], normalise)
    for name in constant:
        outcome[name] = SkippedLayer(layer=name, skipped="the layer's output does not depend "
                                                         "differentiably on the input")
    chosen = [c for c in chosen if c.info.name not in constant]
    scores = dataset_objectives(ctx, chosen, spec.objective)
    units = {c.info.name: _chosen_units(spec, scores[c.info.name], plan.units) for c in chosen}
    targets = [Target(c.info.name, u, _unit_seed(spec.seed, positions[c.info.name], u))
               for c in chosen for u in units[c.info.name]]
    chunks = chunk_targets([float(depth_cost[positions[t.layer]]) for t in targets])
    section.plan.batches = len(chunks)
    per_chunk = math.ceil(plan.steps / PROGRESS_EVERY)
    results: dict[int, tuple[np.ndarray, float, int]] = {}  # target -> input, value, steps
    errors: dict[str, FailedLayer | SkippedLayer] = {}

    def capture(x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        return ctx.model.capture_torch(normalise(x), names)

    stopped = False
    for done, chunk in enumerate(chunks):
        batch = [targets[i] for i in chunk]
        deepest = float(max(positions[t.layer] for t in batch))

        def report(step: int, metrics: dict[str, float], offset: int = done * per_chunk,
                   deepest: float = deepest) -> bool:
            return ctx.report_progress(offset + math.ceil(step / PROGRESS_EVERY),
                                       len(chunks) * per_chunk, layer=deepest, **metrics)

        try:
            result = maximize_objectives(
                joint_score(capture, batch, spec.objective, ctx.device), input_shape=shape,
                seeds=[t.seed for t in batch], low=low, high=high, steps=plan.steps,
                lr=spec.lr, l2=spec.l2, blur_every=spec.blur_every, jitter=spec.jitter,
                mixing=mixing, device=ctx.device, progress=report)
        except InputError:
            raise
        except Exception as exc:
            if is_allocation_failure(exc):
                raise
            for t in batch:
                errors[t.layer] = FailedLayer(layer=t.layer, failed=one_line(exc))
            continue
        for b, i in enumerate(chunk):
            results[i] = (result.inputs[b], float(result.activations[b]), result.steps_run)
        if result.stopped:
            stopped = True
            break
    for c in chosen:
        name = c.info.name
        rows = [i for i, t in enumerate(targets) if t.layer == name]
        if name in errors:
            outcome[name] = errors[name]
        elif not all(i in results for i in rows):
            outcome[name] = SkippedLayer(layer=name, skipped="stopped before this layer ran")
        else:
            maximised = Maximization(np.stack([results[i][0] for i in rows]),
                                     np.array([results[i][1] for i in rows]),
                                     min(results[i][2] for i in rows), False)
            outcome[name] = _layer_entry(ctx, spec, positions[name], c, maximised,
                                         units[name], scores[name], samples, low, high)
    return not stopped
