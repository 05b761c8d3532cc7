"""Compression on the information plane over training: the per-layer detector (numpy only).

Shwartz-Ziv & Tishby (2017) describe two phases of training on the
information plane: a fitting phase, in which each layer's I(X;T) rises, then
a compression phase, in which it falls. Saxe et al. (2018) find the fall in
tanh layers and not in ReLU layers; Chelombiev et al. (2019) find it in ReLU
layers too with adaptive estimators. :func:`compression` says, for one
layer's I(X;T) over checkpoints, whether such a fall happened.

For the checkpoint-series code (``dynamics.mutual_information`` of the report)
---------------------------------------------------------------------------
- Per layer: ``compression(steps, i_xt_of_that_layer)`` with every
  checkpoint's I(X;T) in bits (the ``I_XT`` of the layer's row at each step;
  ``None`` where the layer was skipped, failed or has no I(X;T), as under
  ``ksg``; those steps are left out) returns the ``{"peak_step", "drop_bits",
  "compressed"}`` that the ``compression`` entry of the report adds ``"layer"``
  to (all None when the layer has no estimate at any step). Use the same
  estimator and parameters at every step (the default ``kde`` sets its noise
  per layer and per checkpoint, relative to the layer's variance there).
- The picture:
  :func:`layerlens.analyses.mutual_information.figures.information_plane_over_epochs_figure`
  ``(steps, layers, i_xt, i_ty)`` with ``i_xt[s][l]`` and ``i_ty[s][l]`` the
  bits of layer ``l`` at step ``s`` (``None`` or NaN: no point) returns a
  matplotlib figure; save it with the job's artifact writer
  (``ctx.artifacts.png(figure, ...)``), which also closes it.

References
----------
Shwartz-Ziv, R. & Tishby, N. (2017). Opening the black box of deep neural
    networks via information. arXiv:1703.00810.
Saxe, A. M. et al. (2018). On the information bottleneck theory of deep
    learning. ICLR.
Chelombiev, I., Houghton, C. & O'Donnell, C. (2019). Adaptive estimators show
    information compression in deep neural networks. ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

#: A fall of I(X;T) by more than this many bits after its peak counts as compression.
#: Estimates are deterministic given a checkpoint (no sampling; float64 sums), so this
#: separates slow drift from a compression phase, not noise from signal. Measured scale:
#: on the 12-10-7-5-4-3-2 tanh network on builtin:ib12 (default kde, SGD, checkpoints at
#: epochs 0-400) the layers fell 0.4-2.3 bits from their peaks, while between the checkpoints
#: at epochs 200, 300 and 400 they moved by 0.003-0.13 bits (median 0.03; falls at most
#: 0.098): 0.1 bits is above that drift and a quarter of the smallest fall. Compare steps
#: under one estimator and one set of parameters only.
TOLERANCE_BITS = 0.1


class Compression(TypedDict):
    """One layer's verdict; all three None when no step has an estimate (no verdict)."""

    peak_step: int | None
    drop_bits: float | None
    compressed: bool | None


def compression(steps: Sequence[int], i_xt: Sequence[float | None], *,
                tolerance_bits: float = TOLERANCE_BITS) -> Compression:
    """Whether one layer's I(X;T) fell after its peak by more than ``tolerance_bits``.

    Parameters
    ----------
    steps : sequence of int, shape (S,)
        Training steps (or epochs) of the checkpoints, strictly increasing.
    i_xt : sequence of float or None, shape (S,)
        The layer's I(X;T) at each step, bits; None or NaN where there is no
        estimate (those steps are left out).
    tolerance_bits : float >= 0, default :data:`TOLERANCE_BITS` (0.1 bits)

    Returns
    -------
    dict
        ``peak_step``: the first step at which I(X;T) is largest;
        ``drop_bits``: I(X;T) at the peak minus I(X;T) at the last step with an
        estimate (>= 0; the fall that remains at the end of training, so a dip
        that recovers does not count); ``compressed``: ``drop_bits >
        tolerance_bits``. All None when no step has an estimate.

    Raises
    ------
    ValueError
        Lengths differ, steps are not strictly increasing integers, a value is
        infinite, or the tolerance is negative or not finite.
    """
    if not (isinstance(tolerance_bits, int | float) and math.isfinite(tolerance_bits)
            and tolerance_bits >= 0):
        raise ValueError(f"tolerance_bits must be a finite number >= 0, got {tolerance_bits!r}")
    if len(steps) != len(i_xt):
        raise ValueError(f"steps and i_xt must have the same length, got {len(steps)} and "
                         f"{len(i_xt)}")
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) for s in steps):
        raise ValueError(f"steps must be integers, got {list(steps)!r}")
    step_array = np.asarray(steps, dtype=np.int64)
    if np.any(np.diff(step_array) <= 0):
        raise ValueError(f"steps must be strictly increasing, got {step_array.tolist()}")
    values = np.array([np.nan if v is None else v for v in i_xt], dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError("i_xt contains infinite values")
    known = ~np.isnan(values)
    if not known.any():
        return Compression(peak_step=None, drop_bits=None, compressed=None)
    step_array, values = step_array[known], values[known]
    peak = int(np.argmax(values))
    drop = float(values[peak] - values[-1])
    return Compression(peak_step=int(step_array[peak]), drop_bits=drop,
                       compressed=drop > tolerance_bits)
