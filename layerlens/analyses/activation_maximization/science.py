"""Activation maximisation: the input that most excites a unit, beside the data's best example.

For each selected layer and unit, gradient ascent on the model's input finds
an input, inside the range the dataset spans, that maximises the unit's
objective: a channel's spatial mean (``channel``) or its centre position
(``neuron``) for layers shaped ``(C, *spatial)``, the unit itself for flat
layers ``(D,)``. Images are optimised through a decorrelated Fourier
parametrisation with transformation robustness (Olah et al. 2017), other
inputs as a box-constrained vector (see :mod:`.parametrization`). Units are
optimised as ONE batch whose objective is the sum of the per-element
objectives, whether they belong to one layer (:func:`maximize_activation`) or
to many (:mod:`.joint`: one forward per step returns every layer); each
element's gradient depends only on its own objective, so the batch gives the
same result as one run per unit.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from layerlens.analyses.activation_maximization.parametrization import (
    BoxVector,
    FourierImage,
    Parametrization,
    TransformSettings,
    apply_transform,
    draw_transforms,
    is_image_shape,
)
from layerlens.errors import GradientUnavailableError, InputError
from layerlens.models.base import InputSpec

Objective = Literal["channel", "neuron"]
#: Adam learning rate by parametrisation (Lucid uses 0.05 for Fourier images).
DEFAULT_LR = {"fourier": 0.05, "box": 0.05}
#: Optimisation steps between two progress reports.
PROGRESS_EVERY = 32
#: Standard deviation, in pixels, of the blur applied every ``blur_every`` steps.
BLUR_SIGMA = 0.5
#: The last ``steps // SETTLE_FRACTION`` steps see the input without random transforms.
SETTLE_FRACTION = 8

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
    units: Sequence[int],
    objective: Objective = "channel",
    **options: Any,
) -> Maximization:
    """Maximise several units of ONE layer at once, one batch element per unit.

    ``forward`` maps inputs (B, *input_shape) in data units to the layer's
    activations (B, *layer_shape), differentiably; batch element ``b``
    maximises unit ``units[b]`` (channel for (C, ...) layers, see
    :func:`objective_values`). Every other keyword is
    :func:`maximize_objectives`'s.
    """
    if objective not in ("channel", "neuron"):
        raise InputError(f"objective must be 'channel' or 'neuron', got {objective!r}")
    if len(units) == 0 or len(units) != len(options.get("seeds", ())):
        raise InputError(f"units and seeds must be non-empty and of equal length, got "
                         f"{len(units)} units and {len(options.get('seeds', ()))} seeds")
    device = options.get("device", "cpu")
    target = torch.as_tensor(np.asarray(units, dtype=np.int64), device=device)
    return maximize_objectives(lambda x: unit_objective(forward(x), target, objective),
                               **options)


def maximize_objectives(
    score: Callable[[torch.Tensor], torch.Tensor],
    *,
    input_shape: Sequence[int],
    seeds: Sequence[int],
    low: np.ndarray,
    high: np.ndarray,
    steps: int = 512,
    lr: float | None = None,
    l2: float = 0.0,
    blur_every: int = 0,
    jitter: int | None = None,
    mixing: np.ndarray | None = None,
    device: str = "cpu",
    progress: StepCallback | None = None,
) -> Maximization:
    """Maximise one objective per batch element, all elements from one forward per step.

    Gradient ascent with Adam on ``sum_b score(x)_b - l2 * sum_b ||(x_b - centre)
    / (high - low)||^2``. ``score(x)_b`` must depend on ``x_b`` only (true of any
    model in inference mode, whose batch elements do not interact); Adam is
    element-wise and each element draws its start and transforms from its own
    seed, so element b's result does not depend on which other elements share
    the batch. Image inputs (see :func:`.parametrization.is_image_shape`) use the
    Fourier parametrisation and random jitter (plus small scale and rotation from
    16 px up); other inputs a box ``[low, high]`` (see :func:`.parametrization.to_range`).

    Parameters
    ----------
    score : maps inputs (B, *input_shape) in data units to each element's
        objective (B,), differentiably.
    input_shape : one sample's shape.
    seeds : seed per batch element, for its initial value and its transforms (B values).
    low, high : data range broadcastable to ``input_shape`` (see
        :func:`.parametrization.data_range`), data units.
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
        When no objective depends differentiably on the input.
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if len(seeds) == 0:
        raise InputError("seeds must name one seed per batch element, got none")
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
    centre = torch.as_tensor((np.asarray(low) + np.asarray(high)) / 2, device=device)
    width = torch.as_tensor(np.maximum(np.asarray(high) - np.asarray(low), 1e-12), device=device)

    steps_run, stopped = 0, False
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        x = param()
        robust = thetas is not None and step < steps - steps // SETTLE_FRACTION
        seen = apply_transform(x, thetas[step]) if thetas is not None and robust else x
        value = score(seen)
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
        activations = score(final)
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
