"""Activation maximisation: the input that most excites a unit, beside the data's best example.

For each selected layer and unit, gradient ascent on the model's input finds
an input, inside the range the dataset spans, that maximises the unit's
objective: a channel's spatial mean (``channel``) or its centre position
(``neuron``) for layers shaped ``(C, *spatial)``, the unit itself for flat
layers ``(D,)``. Images are optimised through a decorrelated Fourier
parametrisation with transformation robustness (Olah et al. 2017), other
inputs as a box-constrained vector (see :mod:`.parametrization`). All units
of a layer are optimised as ONE batch whose objective is the sum of the
per-unit objectives; each unit's gradient depends only on its own batch
element, so the batch gives the same result as one run per unit.

Each unit is reported with its final objective (evaluated without random
transforms), the largest objective over the real dataset samples, and that
sample, drawn beside the optimised input.

References
----------
Erhan, D., Bengio, Y., Courville, A. & Vincent, P. (2009). Visualizing
higher-layer features of a deep network. Technical report 1341, Université
de Montréal.
Olah, C., Mordvintsev, A. & Schubert, L. (2017). Feature Visualization.
Distill. https://doi.org/10.23915/distill.00007
Yosinski, J., Clune, J., Nguyen, A., Fuchs, T. & Lipson, H. (2015).
Understanding neural networks through deep visualization. arXiv:1506.06579
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from layerlens.analyses.base import AnalysisContext, skipped
from layerlens.analyses.parametrization import (
    BoxVector,
    FourierImage,
    Parametrization,
    TransformSettings,
    apply_transform,
    channel_decorrelation,
    data_range,
    draw_transforms,
    is_image_shape,
)
from layerlens.capture import LayerActivations
from layerlens.errors import GradientUnavailableError, InputError
from layerlens.models.base import InputSpec
from layerlens.report.plots import plt
from layerlens.spec import ActivationMaximizationSpec

Objective = Literal["channel", "neuron"]
#: Adam learning rate by parametrisation (Lucid uses 0.05 for Fourier images).
DEFAULT_LR = {"fourier": 0.05, "box": 0.05}
#: Optimisation steps between two progress reports.
PROGRESS_EVERY = 32
#: Standard deviation, in pixels, of the blur applied every ``blur_every`` steps.
BLUR_SIGMA = 0.5
#: The last ``steps // SETTLE_FRACTION`` steps see the input without random transforms.
SETTLE_FRACTION = 8
_BATCH = 256
_KIND = "activation_maximization"

#: ``(step, metrics) -> stop?`` called every :data:`PROGRESS_EVERY` steps.
StepCallback = Callable[[int, dict[str, float]], bool | None]


# ----------------------------------------------------------------------------- objectives

def objective_values(values: torch.Tensor, objective: Objective) -> torch.Tensor:
    """Every unit's objective for a batch of one layer's activations.

    Parameters
    ----------
    values : Tensor, shape (n, D) for flat layers or (n, C, *spatial).
    objective : ``channel`` (spatial mean of each channel) or ``neuron``
        (each channel at the centre position ``(H // 2, W // 2, ...)``).
        Flat layers: the units themselves, whatever the objective.

    Returns
    -------
    Tensor, shape (n, D) or (n, C), the layer's units.
    """
    if values.dim() <= 2:
        return values
    if objective == "channel":
        return values.flatten(2).mean(dim=2)
    index: list[Any] = [slice(None), slice(None), *(size // 2 for size in values.shape[2:])]
    return values[tuple(index)]


def unit_objective(values: torch.Tensor, units: torch.Tensor,
                   objective: Objective) -> torch.Tensor:
    """Objective of unit ``units[b]`` on batch element ``b``: shape (B,)."""
    per_unit = objective_values(values, objective)
    return per_unit[torch.arange(len(units), device=per_unit.device), units]


# ----------------------------------------------------------------------------- optimisation

@dataclass
class Maximization:
    """Result of one batched optimisation.

    Attributes
    ----------
    inputs : ndarray, shape (B, *input_shape), float32, data units (before the
        model's mean/std normalisation).
    activations : ndarray, shape (B,), float64, each unit's objective on its
        final input, without random transforms.
    steps_run : int, optimisation steps done (fewer than asked when stopped).
    stopped : bool, True when the progress callback asked to stop.
    """

    inputs: np.ndarray
    activations: np.ndarray
    steps_run: int
    stopped: bool


def maximize_activation(
    forward: Callable[[torch.Tensor], torch.Tensor],
    *,
    input_shape: Sequence[int],
    units: Sequence[int],
    seeds: Sequence[int],
    low: np.ndarray,
    high: np.ndarray,
    objective: Objective = "channel",
    steps: int = 512,
    lr: float | None = None,
    l2: float = 0.0,
    blur_every: int = 0,
    jitter: int | None = None,
    mixing: np.ndarray | None = None,
    device: str = "cpu",
    progress: StepCallback | None = None,
) -> Maximization:
    """Maximise several units of one layer at once, one batch element per unit.

    Gradient ascent with Adam on ``sum_b objective_b(forward(x_b))
    - l2 * sum_b ||(x_b - centre) / (high - low)||^2``. Image inputs (see
    :func:`.parametrization.is_image_shape`) use the Fourier parametrisation
    and random jitter (plus small scale and rotation from 16 px up); other
    inputs a box ``[low, high]`` (see :func:`.parametrization.to_range`).

    Parameters
    ----------
    forward : maps inputs (B, *input_shape) in data units to the layer's
        activations (B, *layer_shape), differentiably.
    input_shape : one sample's shape.
    units : unit index per batch element (channel for (C, ...) layers).
    seeds : seed per batch element, for its initial value and its transforms.
    low, high : data range broadcastable to ``input_shape`` (see
        :func:`.parametrization.data_range`), data units.
    objective : ``channel`` or ``neuron`` (see :func:`objective_values`).
    steps : optimisation steps, >= 1.
    lr : Adam learning rate; None for :data:`DEFAULT_LR`.
    l2 : weight of the L2 decay, >= 0 (Yosinski et al. 2015).
    blur_every : blur images by :data:`BLUR_SIGMA` px every this many steps; 0 never.
    jitter : largest random shift in pixels for images; None picks by size.
    mixing : (C, C) channel decorrelation for images; None for identity.
    device : torch device of the optimisation.
    progress : called every :data:`PROGRESS_EVERY` steps and at the end with
        ``(step, {"objective": mean objective})``; returning True stops.

    Returns
    -------
    Maximization

    Raises
    ------
    InputError
        On invalid parameters (the message names the parameter).
    GradientUnavailableError
        When the layer's output does not depend differentiably on the input.
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if len(units) == 0 or len(units) != len(seeds):
        raise InputError(f"units and seeds must be non-empty and of equal length, got "
                         f"{len(units)} units and {len(seeds)} seeds")
    if objective not in ("channel", "neuron"):
        raise InputError(f"objective must be 'channel' or 'neuron', got {objective!r}")
    if l2 < 0 or blur_every < 0 or (jitter is not None and jitter < 0):
        raise InputError("l2, blur_every and jitter must be >= 0")
    if lr is not None and lr <= 0:
        raise InputError(f"lr must be > 0, got {lr}")
    shape = tuple(int(d) for d in input_shape)
    image = is_image_shape(shape)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    param: Parametrization
    if image:
        channel_mixing = np.eye(shape[0], dtype=np.float32) if mixing is None else mixing
        param = FourierImage.create(generators, shape, low, high, channel_mixing, device)
    else:
        param = BoxVector.create(generators, shape, low, high, device)
    settings = TransformSettings.for_size(shape[1], shape[2], jitter) if image else None
    thetas = (draw_transforms(generators, steps, settings, (shape[1], shape[2]))
              if settings is not None and not settings.identity else None)
    rate = lr if lr is not None else DEFAULT_LR["fourier" if image else "box"]
    optimizer = torch.optim.Adam(param.parameters(), lr=rate)
    target = torch.as_tensor(np.asarray(units, dtype=np.int64), device=device)
    centre = torch.as_tensor((np.asarray(low) + np.asarray(high)) / 2, device=device)
    width = torch.as_tensor(np.maximum(np.asarray(high) - np.asarray(low), 1e-12), device=device)

    steps_run, stopped = 0, False
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        x = param()
        robust = thetas is not None and step < steps - steps // SETTLE_FRACTION
        seen = apply_transform(x, thetas[step]) if thetas is not None and robust else x
        value = unit_objective(forward(seen), target, objective)
        if not value.requires_grad:
            raise GradientUnavailableError(
                "the layer's output does not depend differentiably on the input")
        loss = -value.sum()
        if l2 > 0:
            loss = loss + l2 * ((x - centre) / width).square().sum()
        loss.backward()
        optimizer.step()
        steps_run = step + 1
        if image and blur_every and steps_run % blur_every == 0:
            param.blur_(BLUR_SIGMA)
        due = steps_run % PROGRESS_EVERY == 0 or steps_run == steps
        if (progress is not None and due
                and progress(steps_run, {"objective": float(value.detach().mean())})):
            stopped = True
            break
    with torch.no_grad():
        final = param()
        activations = unit_objective(forward(final), target, objective)
    return Maximization(final.detach().float().cpu().numpy(),
                        activations.detach().double().cpu().numpy(), steps_run, stopped)


def torch_normaliser(spec: InputSpec, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The torch twin of :meth:`InputSpec.preprocess` for batches already shaped (n, *shape)."""
    dtype = getattr(torch, spec.dtype)
    if spec.mean is None and spec.std is None:
        return lambda x: x.to(dtype)
    bshape = (1, -1) + (1,) * (len(spec.shape) - 1)
    mean = torch.tensor(spec.mean if spec.mean is not None else (0.0,), dtype=dtype,
                        device=device).reshape(bshape)
    std = torch.tensor(spec.std if spec.std is not None else (1.0,), dtype=dtype,
                       device=device).reshape(bshape)
    return lambda x: (x.to(dtype) - mean) / std


# ----------------------------------------------------------------------------- dataset side

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


def _check_units(units: Sequence[int] | None, layers: Sequence[LayerActivations]) -> None:
    if units is None:
        return
    if not units:
        raise InputError("units must name at least one unit, or be omitted")
    if min(units) < 0:
        raise InputError(f"units must be >= 0, got {min(units)}")
    for captured in layers:
        shape = captured.info.shape
        if shape and max(units) >= shape[0]:
            raise InputError(
                f"units: index {max(units)} is out of range for layer '{captured.info.name}' "
                f"with {shape[0]} units (0..{shape[0] - 1}); choose layers with 'layers'")


def _unit_seed(seed: int, layer_index: int, unit: int) -> int:
    return int(np.random.SeedSequence([seed, layer_index, unit]).generate_state(1)[0])


# ----------------------------------------------------------------------------- figures

def _as_picture(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, str]:
    """An (H, W) or (H, W, 3) array for imshow, position in the data range, and a note."""
    span = np.maximum(high - low, 1e-12)
    scaled = np.clip((x - low) / span, 0.0, 1.0)
    if x.shape[0] == 3:
        return scaled.transpose(1, 2, 0), ""
    if x.shape[0] == 1:
        return scaled[0], ""
    return scaled.mean(axis=0), f" (mean of {x.shape[0]} channels)"


_MIN_PICTURE_PIXELS = 96  # per-unit pictures are upscaled to at least this size


def _side_by_side(optimised: np.ndarray, example: np.ndarray, *, low: np.ndarray,
                  high: np.ndarray) -> np.ndarray:
    """Optimised input (left) and the dataset's strongest example (right), upscaled with
    nearest neighbours, black = data min, white = data max; the report's table carries
    the numbers."""
    left, right = _as_picture(optimised, low, high)[0], _as_picture(example, low, high)[0]
    scale = max(1, -(-_MIN_PICTURE_PIXELS // max(left.shape[:2])))
    left, right = (np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in (left, right))
    gap = np.ones((left.shape[0], max(4, scale), *left.shape[2:]))
    return np.concatenate([left, gap, right], axis=1)


def _unit_figure(optimised: np.ndarray, example: np.ndarray, *, low: np.ndarray,
                 high: np.ndarray, title: str, activation: float, example_value: float,
                 example_label: str) -> Any:
    """Vector inputs: optimised input (left) beside the dataset's strongest example (right)."""
    span = np.maximum(np.asarray(high) - np.asarray(low), 1e-12)
    flat_opt = ((optimised - low) / span).reshape(-1)
    flat_ex = ((example - low) / span).reshape(-1)
    index = np.arange(flat_opt.size)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.8, wspace=0.08)
    for ax, values, name, colour in (
            (axes[0], flat_opt, f"optimised: {activation:.4g}", "tab:red"),
            (axes[1], flat_ex, f"dataset max: {example_value:.4g} (class {example_label})",
             "tab:blue")):
        if values.size <= 64:
            ax.bar(index, values, color=colour, width=0.8)
        else:
            ax.step(index, values, where="mid", color=colour, lw=1.0)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("input feature", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("position in data range\n(0 = min, 1 = max)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _grid_figure(inputs: np.ndarray, units: Sequence[int], activations: np.ndarray, *,
                 low: np.ndarray, high: np.ndarray, title: str) -> Any:
    """All of a layer's optimised inputs: image tiles, or a unit x feature heatmap."""
    if is_image_shape(inputs.shape[1:]):
        cols = min(8, len(units))
        rows = -(-len(units) // cols)
        width = max(1.3 * cols + 0.4, 5.0)  # inches; wide enough for the title
        heading = textwrap.fill(title, width=int(width * 13)) + (
            "\n(black = data min, white = data max)")
        title_inches = 0.18 * (heading.count("\n") + 1) + 0.35
        height = 1.5 * rows + title_inches
        fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
        side = max(0.02, 0.5 - (1.3 * cols + 0.4) / (2 * width))
        fig.subplots_adjust(left=side, right=1 - side, bottom=0.03,
                            top=1 - title_inches / height, wspace=0.1, hspace=0.45)
        for ax in axes.flat:
            ax.axis("off")
        for ax, x, unit, value in zip(axes.flat, inputs, units, activations, strict=False):
            ax.axis("on")
            ax.imshow(_as_picture(x, low, high)[0], cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"unit {unit}\n{value:.3g}", fontsize=8)
        fig.suptitle(heading, fontsize=9)
    else:
        span = np.maximum(high - low, 1e-12)
        position = ((inputs - low) / span).reshape(len(inputs), -1)
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(units) + 1.6))
        fig.subplots_adjust(left=0.2, right=0.95, bottom=0.25 if len(units) < 6 else 0.12,
                            top=0.85)
        mesh = ax.imshow(position, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                         interpolation="nearest")
        ax.set_yticks(range(len(units)), [f"unit {u}: {v:.3g}"
                                          for u, v in zip(units, activations, strict=True)],
                      fontsize=7)
        ax.set_xlabel("input feature")
        fig.colorbar(mesh, ax=ax, label="value (0 = data min, 1 = data max)")
        fig.suptitle(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- run

def _objective_label(shape: Sequence[int], objective: Objective) -> str:
    if len(shape) <= 1:
        return "unit"
    return "channel (spatial mean)" if objective == "channel" else "channel (centre neuron)"


def _layer_entry(ctx: AnalysisContext, spec: ActivationMaximizationSpec, index: int,
                 captured: LayerActivations, result: Maximization, units: Sequence[int],
                 scores: np.ndarray, samples: np.ndarray, low: np.ndarray,
                 high: np.ndarray) -> dict[str, Any]:
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
                _side_by_side(result.inputs[b], samples[best], low=low, high=high), *parts)
        else:
            image = ctx.artifacts.png(_unit_figure(
                result.inputs[b], samples[best], low=low, high=high,
                title=f"layer {name}, {what} {unit}", activation=activation,
                example_value=best_value, example_label=label), *parts)
        entries.append({
            "unit": int(unit),
            "activation": activation,
            "dataset_max_activation": best_value,
            "dataset_mean_activation": float(scores[:, unit].mean()),
            "dataset_example_index": best,
            "dataset_example_label": label,
            "image": image,
            "array": ctx.artifacts.npy(result.inputs[b], *parts),
        })
    grid = _grid_figure(result.inputs, units, result.activations, low=low, high=high,
                        title=f"layer {name}: optimised input per {what}")
    return {"layer": name, "op": captured.info.op, "steps_run": result.steps_run,
            "units": entries, "grid": ctx.artifacts.png(grid, _KIND, f"{index:02d}", name,
                                                        "grid")}


def run(spec: ActivationMaximizationSpec, ctx: AnalysisContext) -> dict[str, Any]:
    """The ``activation_maximization`` section of the report (see ARCHITECTURE.md)."""
    layers = ctx.layers(spec.layers)
    _check_units(spec.units, layers)
    input_spec = ctx.model.input_spec
    shape = tuple(input_spec.shape)
    image = is_image_shape(shape)
    section: dict[str, Any] = {
        "objective": spec.objective, "steps": spec.steps,
        "parametrization": "fourier" if image else "box",
        "lr": spec.lr if spec.lr is not None else DEFAULT_LR["fourier" if image else "box"],
        "complete": True, "layers": []}
    if not ctx.model.differentiable:
        reason = ctx.model.gradient_error or "the model is not differentiable"
        section["layers"] = [skipped(c.info.name, reason) for c in layers]
        return section

    samples = np.asarray(ctx.dataset.x, dtype=np.float32).reshape((-1, *shape))
    low, high = data_range(samples, shape)
    mixing = channel_decorrelation(samples, shape) if image else None
    normalise = torch_normaliser(input_spec, ctx.device)
    runnable = [c for c in layers if c.info.shape]
    chunks = math.ceil(spec.steps / PROGRESS_EVERY)
    total, done = chunks * len(runnable), 0
    stopping = False
    positions = {layer_name: i for i, layer_name in enumerate(ctx.model.layer_names)}
    for captured in layers:
        name = captured.info.name
        index = positions[name]  # the layer's place in the model: seeds and file names
        if stopping:
            section["layers"].append(skipped(name, "stopped before this layer ran"))
            continue
        if not captured.info.shape:
            section["layers"].append(skipped(name, "a scalar layer has no units to maximise"))
            continue
        scores = dataset_objective(ctx, captured, spec.objective)
        units = (list(spec.units) if spec.units is not None
                 else [int(u) for u in np.argsort(-scores.mean(axis=0), kind="stable")
                       [:spec.max_units]])
        offset = done

        def report(step: int, metrics: dict[str, float], offset: int = offset,
                   index: int = index) -> bool:
            chunk = offset + math.ceil(step / PROGRESS_EVERY)
            return ctx.report_progress(chunk, total, layer=float(index), **metrics)

        def forward(x: torch.Tensor, name: str = name) -> torch.Tensor:
            return ctx.model.capture_torch(normalise(x), [name])[name]

        try:
            result = maximize_activation(
                forward, input_shape=shape, units=units,
                seeds=[_unit_seed(spec.seed, index, u) for u in units], low=low, high=high,
                objective=spec.objective, steps=spec.steps, lr=spec.lr, l2=spec.l2,
                blur_every=spec.blur_every, jitter=spec.jitter, mixing=mixing,
                device=ctx.device, progress=report)
        except GradientUnavailableError as exc:
            section["layers"].append(skipped(name, str(exc)))
            done += chunks
            continue
        done += chunks
        section["layers"].append(_layer_entry(ctx, spec, index, captured, result, units,
                                              scores, samples, low, high))
        if result.stopped:
            stopping = True
            section["complete"] = False
    return section
