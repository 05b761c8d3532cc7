"""The float32 resolution of activations: differences below it are rounding, not signal.

Activations are stored as float32, so a value of magnitude ``m`` is known at
best to ``np.spacing(float32(m))`` (between ``2**-24 m`` and ``2**-23 m``), and
the operations that made it add rounding of order ``sqrt(K)`` to ``K`` such
spacings for a sum over ``K`` terms. Measured: the mean over a float32 softmax
of ``V`` entries, which should be exactly ``1/V``, varies between samples by 13
spacings at ``V = 6625`` and by up to 123 at ``V = 50000`` (torch, CPU); the
report that motivated this rule saw about 70 at ``V = 6625`` (onnxruntime).

layerlens therefore takes values at a resolution of :data:`RESOLUTION_ULPS`
spacings of their magnitude (about 1e-4 of it, 13 to 14 of float32's 24
significant bits): a unit whose range over the samples is within the
resolution of its largest magnitude is *constant* (``dead_fraction``; the
mutual-information estimators treat it as one value), and no bin of a binned
estimator is narrower than the resolution of the values at its edges.
"""

from __future__ import annotations

import numpy as np

#: Float32 spacings of a value's magnitude below which differences are taken as rounding.
RESOLUTION_ULPS = 1024


def resolution(magnitude: np.ndarray | float) -> np.ndarray:
    """``RESOLUTION_ULPS * np.spacing(float32(|magnitude|))``: the resolution of values that large.

    Parameters
    ----------
    magnitude : float or ndarray
        Absolute value(s) of the activations, in activation units.

    Returns
    -------
    ndarray, float64, the shape of ``magnitude``, in activation units.
    """
    spacing = np.spacing(np.abs(np.asarray(magnitude, dtype=np.float32)))
    return RESOLUTION_ULPS * spacing.astype(np.float64)


def constant_at_resolution(unit_min: np.ndarray, unit_max: np.ndarray) -> np.ndarray:
    """Which units are constant over the samples at float32 resolution.

    Parameters
    ----------
    unit_min, unit_max : ndarray, shape (n_units,)
        Each unit's smallest and largest value over the samples.

    Returns
    -------
    ndarray of bool, shape (n_units,)
        ``unit_max - unit_min <= resolution(max(|unit_min|, |unit_max|))``; a
        unit with a NaN extreme is not constant.
    """
    low = np.asarray(unit_min, dtype=np.float64)
    high = np.asarray(unit_max, dtype=np.float64)
    return high - low <= resolution(np.maximum(np.abs(low), np.abs(high)))
