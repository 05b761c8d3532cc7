"""How much activation maximisation a run does: layers, units per layer, steps.

The cost of a run is about ``steps x sum over optimised units of the forward
and backward pass up to the unit's layer``; the pass is measured in
activation elements (every layer's output size up to that layer, one input),
a proxy proportional to memory and close to proportional to compute for
convolutional and dense networks. Defaults: every layer, 8 units, 512 steps.
A model where that exceeds :data:`WORK_BUDGET` gets a stated smaller default,
cut in this order until it fits: at most :data:`MAX_LAYERS` layers spread
evenly over depth (a model with more layers), units per layer halved down to
:data:`MIN_UNITS`, steps halved down to :data:`MIN_STEPS`, then units down to
one. What the spec names is never cut (``layers``, ``units``, ``max_units``,
``steps``). The input resolution is the model's: units are optimised at the
size they were trained to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Default optimisation steps and units per layer (when the spec names neither).
DEFAULT_STEPS = 512
DEFAULT_UNITS = 8
#: With no ``layers`` in the spec, at most this many layers, spread evenly over depth.
MAX_LAYERS = 16
#: Activation element-steps of the default run. ResNet-50 at 224 x 224 (159 layers, 32 M
#: activation elements per input up to the last) gets 16 layers, 2 units, 128 steps: 9.0e10
#: element-steps in 8 batches, measured at about 6 minutes on 2 cores of a Xeon server
#: (6 of the 8 batches in 247 s; torch threads 2, taskset) and 20 s on an H200.
WORK_BUDGET = 1.0e11
#: The floors of the cuts before units go down to one.
MIN_UNITS = 2
MIN_STEPS = 128


@dataclass(frozen=True)
class Plan:
    """What runs.

    Attributes
    ----------
    layers : indices (into the candidate layers) of the layers optimised, in depth order.
    units : units per layer (a narrower layer gets all of its units).
    steps : optimisation steps.
    work : activation element-steps of the run (see the module docstring).
    reason : one sentence for the report: what was chosen and why.
    """

    layers: list[int]
    units: int
    steps: int
    work: float
    reason: str


def spread_over_depth(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices of ``0..n-1`` evenly spaced, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, k)})


def plan_run(costs: Sequence[float], widths: Sequence[int], *, layers_named: bool,
             max_layers: int, units: int | None, steps: int | None,
             budget: float = WORK_BUDGET) -> Plan:
    """The layers, units per layer and steps of a run.

    Parameters
    ----------
    costs : per candidate layer, in depth order, activation elements of one
        input's forward pass up to it.
    widths : per candidate layer, its number of units.
    layers_named : the spec named ``layers``: optimise every candidate.
    max_layers : layers spread over depth otherwise (the spec's ``max_layers``).
    units : units per layer the spec fixes (``len(units)`` or ``max_units``); None: default.
    steps : steps the spec fixes; None: default.
    budget : activation element-steps the default run may take.
    """
    chosen = (list(range(len(costs))) if layers_named
              else spread_over_depth(len(costs), max_layers))
    n_units = DEFAULT_UNITS if units is None else units
    n_steps = DEFAULT_STEPS if steps is None else steps

    def work(u: int, s: int) -> float:
        return float(s * sum(min(u, widths[i]) * costs[i] for i in chosen))

    asked = work(n_units, n_steps)
    while units is None and n_units > MIN_UNITS and work(n_units, n_steps) > budget:
        n_units //= 2
    while steps is None and n_steps > MIN_STEPS and work(n_units, n_steps) > budget:
        n_steps //= 2
    while units is None and n_units > 1 and work(n_units, n_steps) > budget:
        n_units //= 2
    notes = []
    if len(chosen) < len(costs):
        notes.append(f"{len(chosen)} of {len(costs)} layers spread evenly over depth "
                     f"(max_layers {max_layers})")
    cut = [f"{n_units} units per layer instead of {DEFAULT_UNITS}"] if (
        units is None and n_units < DEFAULT_UNITS) else []
    cut += [f"{n_steps} steps instead of {DEFAULT_STEPS}"] if n_steps < (
        DEFAULT_STEPS if steps is None else steps) else []
    if cut:
        notes.append(f"{' and '.join(cut)}: the default's {asked:.3g} activation "
                     f"element-steps exceed the budget of {budget:.3g}")
    reason = "; ".join(notes) or ("every selected layer; units and steps as asked or by default"
                                  if costs else "no selected layer can be optimised (see why "
                                                "under each)")
    return Plan(chosen, n_units, n_steps, work(n_units, n_steps), reason)
