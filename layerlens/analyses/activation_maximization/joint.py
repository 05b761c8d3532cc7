"""Units of many layers optimised together: one forward pass per step for a whole batch.

Batch element ``b`` drives its own ``(layer, unit)`` objective; one call of
the model's differentiable capture returns every layer the batch names, and
each element's objective is read from its own layer (:func:`joint_score`).
The batch is cut into chunks (:func:`chunk_targets`) so that memory stays
bounded and shallow units do not pay for a forward pass much deeper than
their layer: a chunk's forward stops at its deepest layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from layerlens.analyses.activation_maximization.science import Objective, objective_values

#: Working memory of one chunk's forward and backward pass, bytes.
CHUNK_BYTES = 1 << 30
#: Bytes per activation element kept for the backward pass (float32 value and its gradient).
BYTES_PER_ELEMENT = 8
#: A chunk's deepest layer costs at most this many times its shallowest (cumulative
#: activation elements), so no unit runs a forward more than this much deeper than its own...
DEPTH_RATIO = 2.0
#: ...unless the extra depth costs less than one more forward call: the chunk's inputs
#: would do fewer extra activation elements than this (about 5 ms of compute on a CPU
#: core at 5 ns per element of a forward and backward pass, a call's overhead on a small net).
CALL_ELEMENTS = 1.0e6

#: ``(inputs (B, *input_shape), layer names) -> {name: activations (B, *layer_shape)}``.
Capture = Callable[[torch.Tensor, Sequence[str]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Target:
    """One batch element's objective: ``unit`` of ``layer``, started from ``seed``."""

    layer: str
    unit: int
    seed: int


def joint_score(capture: Capture, targets: Sequence[Target], objective: Objective,
                device: str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """``x (B, *input_shape) -> (B,)``: element b's objective is ``targets[b]``'s unit.

    One ``capture`` call per evaluation returns every layer the targets name;
    element b's value is read from ``targets[b].layer`` at row b only, so its
    gradient depends on its own objective alone.
    """
    layers = list(dict.fromkeys(t.layer for t in targets))
    rows = {name: [b for b, t in enumerate(targets) if t.layer == name] for name in layers}
    index = {name: torch.tensor(rows[name], device=device) for name in layers}
    units = {name: torch.tensor([targets[b].unit for b in rows[name]], device=device)
             for name in layers}
    order = torch.tensor([b for name in layers for b in rows[name]], device=device)
    inverse = torch.argsort(order)

    def score(x: torch.Tensor) -> torch.Tensor:
        values = capture(x, layers)
        parts = []
        for name in layers:
            per_unit = objective_values(values[name][index[name]], objective)
            parts.append(per_unit[torch.arange(len(units[name]), device=per_unit.device),
                                  units[name]])
        return torch.cat(parts)[inverse]

    return score


def chunk_targets(costs: Sequence[float], *, capacity: float = CHUNK_BYTES / BYTES_PER_ELEMENT,
                  ratio: float = DEPTH_RATIO, call: float = CALL_ELEMENTS) -> list[range]:
    """Consecutive runs of targets sorted by depth, one optimisation batch each.

    Parameters
    ----------
    costs : per target, in depth order (non-decreasing), the activation elements of
        one input's forward pass up to its layer (memory and compute proxy).
    capacity : activation elements one chunk may hold: a run grows while
        ``len(run) * cost(deepest) <= capacity``.
    ratio, call : and while ``cost(deepest) <= ratio * cost(shallowest)`` or the
        extra work ``len(run) * (cost(deepest) - cost(shallowest)) <= call``.

    Returns
    -------
    list of range, covering ``0..len(costs)-1`` in order; every run has at least one target.
    """
    chunks: list[range] = []
    start = 0
    for end in range(1, len(costs) + 1):
        if end == len(costs):
            chunks.append(range(start, end))
            break
        too_deep = (costs[end] > ratio * costs[start]
                    and (end - start) * (costs[end] - costs[start]) > call)
        if too_deep or (end - start + 1) * costs[end] > capacity:
            chunks.append(range(start, end))
            start = end
    return chunks
