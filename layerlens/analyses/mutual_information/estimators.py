"""Mutual-information estimators for layer activations: binning, adaptive binning, KDE, KSG.

The dataset is a finite set of ``n`` equiprobable samples. ``X`` is the
sample's identity, ``T`` a layer's activations, shape (n, d), and ``Y`` the
integer class label. Every function here is pure: arrays in, numbers out.

Binned estimators turn each sample's activation vector into a discrete
symbol and use exact plug-in entropies; since ``T`` is a function of ``X``,
``I(X;T) = H(T)``. The symbols are counted without ever sorting whole rows:
each row of bin indices is reduced to a few random integer projections by one
matrix product (exact in floating point, see :func:`_hash_weights`), the
projections are combined into a 64-bit key, and the grouping by key is
checked against the projections themselves, so a key collision is detected
and resolved exactly. Two different bin rows get the same projections with
probability below ``2**-64`` per pair.

Every estimator takes the values at float32 resolution
(:mod:`layerlens.resolution`): a unit whose range over the samples is within
``RESOLUTION_ULPS`` (1024) float32 spacings of its magnitude is set to its
minimum (rounding noise is not information), so a layer whose every unit is
constant carries exactly 0 bits; and no bin is narrower than the resolution
of the values at its edges (equal width: fewer bins over a very narrow range;
adaptive: edges too close to the previous one are dropped).

Units: entropies and binned/KDE informations in bits; :func:`ksg_mi` and
:func:`ksg_label_mi` return nats (as Kraskov et al. and Ross write them).

References
----------
Shwartz-Ziv, R. & Tishby, N. (2017). Opening the black box of deep neural
    networks via information. arXiv:1703.00810. (equal-width binning)
Chelombiev, I., Houghton, C. & O'Donnell, C. (2019). Adaptive estimators show
    information compression in deep neural networks. ICLR. (adaptive binning)
Kolchinsky, A. & Tracey, B. D. (2017). Estimating mixture entropy with
    pairwise distances. Entropy 19(7), 361. (pairwise-distance upper bound)
Saxe, A. M. et al. (2018). On the information bottleneck theory of deep
    learning. ICLR. (KDE with added Gaussian noise)
Kraskov, A., Stögbauer, H. & Grassberger, P. (2004). Estimating mutual
    information. Phys. Rev. E 69, 066138. (KSG, estimator 1)
Ross, B. C. (2014). Mutual information between discrete and continuous data
    sets. PLoS ONE 9(2), e87357. (KSG for a discrete Y)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from layerlens.errors import InputError
from layerlens.resolution import constant_at_resolution, resolution

BinRange = Literal["observed"] | tuple[float, float]
#: ``(step, total, metrics) -> stop?``, called after each layer.
LayerProgress = Callable[[int, int, dict[str, float]], bool | None]
#: Writes the bin index of every value of a (rows, d) block into a float32 buffer.
Binner = Callable[[torch.Tensor, torch.Tensor], None]

#: Values binned per block of rows (CPU: a few MB, so the elementwise passes stay in cache).
_CPU_BLOCK_VALUES = 1 << 20
_CUDA_BLOCK_VALUES = 1 << 24
#: Entries of one (rows, n) pairwise block for KDE and KSG.
_PAIR_BLOCK = 1 << 22
#: Per-pair collision bound of the random projections: ``wmax ** -K <= 2 ** -_HASH_BITS``.
_HASH_BITS = 64
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- helpers


def entropy_bits(counts: np.ndarray) -> float:
    """Plug-in entropy, in bits, of a distribution given by its counts.

    Parameters
    ----------
    counts : ndarray, shape (k,)
        Non-negative occurrence counts (zeros are ignored).

    Returns
    -------
    float
        :math:`-\\sum_i p_i \\log_2 p_i` with :math:`p_i = c_i / \\sum c`. The
        counts are summed in sorted order, so the value does not depend on
        the order in which symbols were found.
    """
    counts = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    counts = counts[counts > 0]
    if counts.size <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"y must have shape ({n},), one label per sample, got {y.shape}")
    _, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).ravel()


def _layer(values: np.ndarray, name: str = "values") -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or len(values) == 0:
        raise InputError(f"{name} must have shape (n_samples, n_features), got {values.shape}")
    if values.dtype.kind not in "fiub":
        raise InputError(f"{name} must be numeric, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return values


def _check_n_bins(n_bins: object) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise InputError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    return int(n_bins)


def _check_bin_range(bin_range: object) -> BinRange:
    if bin_range == "observed":
        return "observed"
    if (isinstance(bin_range, tuple | list) and len(bin_range) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in bin_range)
            and bin_range[0] < bin_range[1]):
        return (float(bin_range[0]), float(bin_range[1]))
    raise InputError(f"bin_range must be 'observed' or [lo, hi] with finite lo < hi, "
                     f"got {bin_range!r}")


@dataclass(frozen=True)
class _Resolved:
    """A layer at float32 resolution: ``values`` (n, d) with every constant unit set to its
    minimum, ``constant`` (d,) which units those are, ``low``/``high`` the extremes."""

    values: torch.Tensor
    constant: np.ndarray
    low: float
    high: float


def _resolve(values: torch.Tensor) -> _Resolved:
    """``values`` (n, d) with the units constant at float32 resolution made exactly constant."""
    if values.shape[1] == 0:
        return _Resolved(values, np.zeros(0, dtype=bool), 0.0, 0.0)
    low = values.amin(dim=0)
    unit_min = low.cpu().numpy().astype(np.float64)
    unit_max = values.amax(dim=0).cpu().numpy().astype(np.float64)
    constant = constant_at_resolution(unit_min, unit_max)
    noisy = constant & (unit_max > unit_min)
    if noisy.any():  # a new tensor: the caller's array may be shared with torch.as_tensor
        values = torch.where(torch.from_numpy(noisy).to(values.device), low, values)
    high = np.where(constant, unit_min, unit_max)
    return _Resolved(values, constant, float(unit_min.min()), float(high.max()))


def constant_units(values: np.ndarray) -> np.ndarray:
    """Which units of a layer are constant over the samples at float32 resolution.

    Parameters
    ----------
    values : ndarray, shape (n_samples, n_features)

    Returns
    -------
    ndarray of bool, shape (n_features,)
        See :func:`layerlens.resolution.constant_at_resolution`.
    """
    values = _layer(values)
    return constant_at_resolution(values.min(axis=0), values.max(axis=0))


def _mutual_information_from_partition(inverse: torch.Tensor, counts: torch.Tensor,
                                       y: torch.Tensor, n_classes: int,
                                       h_y: float) -> tuple[float, float]:
    """``(H(T), I(T;Y))`` in bits from each sample's symbol index ``inverse``."""
    h_t = entropy_bits(counts.cpu().numpy())
    joint = torch.bincount(inverse * n_classes + y, minlength=0)
    h_ty = entropy_bits(joint.cpu().numpy())
    # Plug-in I(T;Y) = H(T) + H(Y) - H(T,Y) lies in [0, min(H(T), H(Y))]; clip rounding.
    i_ty = min(max(h_t + h_y - h_ty, 0.0), h_t, h_y)
    return h_t, i_ty


# --------------------------------------------------------------------------- binning


@dataclass(frozen=True)
class BinnedInformation:
    """One layer's binned estimate.

    Attributes
    ----------
    i_xt : float
        I(X;T) = H(T) of the binned activations, bits.
    i_ty : float
        I(T;Y) of the binned activations, bits.
    n_symbols : int
        Distinct binned activation vectors among the samples.
    bin_lo, bin_hi : float
        Range the bins cover (equal width: observed or fixed range; adaptive:
        the smallest and largest value).
    n_edges : int
        Distinct inner bin edges (adaptive edges coincide where many values tie;
        both kinds are fewer where bins would be narrower than the resolution).
    constant_units : int
        Units constant at float32 resolution (binned as one value each).
    """

    i_xt: float
    i_ty: float
    n_symbols: int
    bin_lo: float
    bin_hi: float
    n_edges: int
    constant_units: int


def equal_width_bins(values: np.ndarray, *, n_bins: int = 30,
                     bin_range: BinRange = "observed") -> np.ndarray:
    """Equal-width bin index of every value (the definition the fast path reproduces exactly).

    Parameters
    ----------
    values : ndarray, shape (n_samples, n_features)
        One layer's activations; converted to float32, and every unit constant
        at float32 resolution set to its minimum (module docstring).
    n_bins : int, default 30
    bin_range : "observed" or (lo, hi)
        ``observed``: ``[min, max]`` over all the layer's values (one range per
        layer). ``(lo, hi)``: a fixed range; values outside fall in the edge bins.

    Returns
    -------
    ndarray, shape (n_samples, n_features), int64
        ``clip(floor((v - lo) * s), 0, b - 1)`` in float32 arithmetic with
        ``s = float32(b / (hi - lo))`` (``s = 0`` for a constant layer), where
        ``b = min(n_bins, floor((hi - lo) / r))`` (at least 1) and ``r`` is the
        float32 resolution of the largest binned magnitude
        (:func:`layerlens.resolution.resolution`): no bin is narrower than
        ``r``. While ``b = n_bins``, doubling ``n_bins`` doubles ``s`` exactly,
        so the bins of ``2 n`` split those of ``n``: the partitions are nested.
    """
    resolved = _resolve(torch.from_numpy(_layer(values).astype(np.float32)))
    lo, scale, bins = _equal_width(resolved.low, resolved.high, _check_n_bins(n_bins),
                                   _check_bin_range(bin_range))
    index = np.floor((resolved.values.numpy() - np.float32(lo)) * np.float32(scale))
    return np.clip(index, 0, bins - 1).astype(np.int64)


def _equal_width(v_min: float, v_max: float, n_bins: int,
                 bin_range: BinRange) -> tuple[float, float, int]:
    """``(lo, scale, bins)``: ``lo`` and ``scale`` exactly representable in float32, and
    ``bins <= n_bins`` so that no bin is narrower than the values' float32 resolution."""
    if bin_range == "observed":
        lo, hi = float(np.float32(v_min)), float(np.float32(v_max))
    else:
        lo, hi = float(np.float32(bin_range[0])), float(np.float32(bin_range[1]))
    magnitude = max(abs(min(max(v, lo), hi)) for v in (v_min, v_max))
    bins = math.floor(min(float(n_bins), (hi - lo) / float(resolution(magnitude))))
    if bins < 2:
        return lo, 0.0, 1
    return lo, float(np.float32(bins / (hi - lo))), bins


def rank_edges(values: np.ndarray | torch.Tensor, *, n_bins: int = 30) -> np.ndarray:
    """Adaptive bin edges: values at equal ranks of the layer's pooled values.

    Parameters
    ----------
    values : array, shape (n_samples, n_features)
        One layer's activations (all values pooled).
    n_bins : int, default 30

    Returns
    -------
    ndarray, shape (at most n_bins - 1,), float32, increasing
        Candidate edges ``e_k = s[floor(k M / n_bins)]``, ``k = 1..n_bins-1``,
        where ``s`` are the ``M`` pooled values sorted; tied values give one
        edge, and an edge is kept only when it lies at least the float32
        resolution ``r`` (:func:`layerlens.resolution.resolution` of the larger
        magnitude) above the previous kept edge (the first: above ``s[0]``). So
        no bin between two edges is narrower than the values' resolution, and
        values within ``r`` of each other are split by at most one edge. A
        value ``v`` falls in bin ``#{k: e_k <= v}`` (``numpy.digitize``), so
        each bin holds about ``M / n_bins`` values; tied values share a bin,
        and some bins stay large (ReLU zeros).
    """
    n_bins = _check_n_bins(n_bins)
    if isinstance(values, torch.Tensor) and values.device.type != "cpu":
        flat = torch.sort(values.reshape(-1)).values
        ranks = torch.arange(1, n_bins, device=flat.device) * flat.numel() // n_bins
        edges = flat[ranks].cpu().numpy().astype(np.float32)
        low = float(flat[0])
    else:
        pooled = np.asarray(values, dtype=np.float32).ravel()
        positions = np.arange(1, n_bins) * pooled.size // n_bins
        edges = np.partition(pooled, positions)[positions].astype(np.float32)
        low = float(pooled.min())
    return _resolved_edges(edges, low)


def _resolved_edges(edges: np.ndarray, low: float) -> np.ndarray:
    """The distinct ``edges``, each kept at least one float32 resolution above the previous
    kept one (the first: above ``low``)."""
    kept: list[float] = []
    for edge in np.unique(edges).tolist():
        previous = kept[-1] if kept else low
        if edge - previous >= float(resolution(max(abs(previous), abs(edge)))):
            kept.append(edge)
    return np.asarray(kept, dtype=np.float32)


def _hash_weights(n_features: int, n_bins: int, generator: torch.Generator,
                  ) -> tuple[torch.Tensor, torch.dtype]:
    """Random integer projection weights (n_features, K) and the float dtype that sums them exactly.

    Every partial sum of ``bins @ W`` is an integer below ``2**24`` (float32)
    or ``2**53`` (float64), hence exact in any summation order (BLAS, GPU,
    and TF32, since bin indices and float32 weights stay below ``2**10``).
    For two different bin rows, one column of ``W`` (uniform on ``[0, wmax)``)
    gives equal projections with probability at most ``1 / wmax``; ``K``
    columns bring this to at most ``2**-64``.
    """
    span = n_features * (n_bins - 1) + 1
    dtype, wmax = torch.float32, min((1 << 24) // span, 1 << 10)
    if wmax < 16:
        dtype, wmax = torch.float64, min((1 << 53) // span, 1 << 40)
    if wmax < 2:
        raise InputError(f"n_bins ({n_bins}) x n_features ({n_features}) is too large to bin")
    k = math.ceil(_HASH_BITS / math.log2(wmax))
    weights = torch.randint(0, wmax, (n_features, k), generator=generator, dtype=torch.int64)
    return weights.to(dtype), dtype


def _partition(codes: torch.Tensor, generator: torch.Generator,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal rows of the projections ``codes`` (n, K): ``(inverse (n,), counts)``."""
    n, k = codes.shape
    mult = torch.randint(-(1 << 62), 1 << 62, (k,), generator=generator, dtype=torch.int64)
    key = (codes.to(torch.int64) * (mult * 2 + 1).to(codes.device)).sum(1)
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    arange = torch.arange(n, device=codes.device)
    first = torch.full((len(counts),), n, dtype=torch.int64, device=codes.device)
    first.scatter_reduce_(0, inverse, arange, reduce="amin")
    if not torch.equal(codes[first][inverse], codes):  # a 64-bit key collision: group exactly
        _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return inverse, counts


def _bin_codes(values: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype,
               binner: Binner) -> torch.Tensor:
    """``bins(values) @ weights``, computed in row blocks that reuse one buffer."""
    n, d = values.shape
    budget = _CUDA_BLOCK_VALUES if values.device.type == "cuda" else _CPU_BLOCK_VALUES
    rows = max(1, min(n, budget // max(d, 1)))
    weights = weights.to(values.device)
    buffer = torch.empty((rows, d), dtype=torch.float32, device=values.device)
    wide = (torch.empty((rows, d), dtype=dtype, device=values.device)
            if dtype != torch.float32 else None)
    codes = torch.empty((n, weights.shape[1]), dtype=dtype, device=values.device)
    for start in range(0, n, rows):
        block = values[start:start + rows]
        bins = buffer[:len(block)]
        binner(block, bins)
        if wide is not None:
            bins = wide[:len(block)].copy_(bins)
        torch.mm(bins, weights, out=codes[start:start + len(block)])
    return codes


def _equal_width_binner(lo: float, scale: float, n_bins: int) -> Binner:
    """Writes ``clip(floor((block - lo) * scale), 0, n_bins - 1)`` into ``out`` (float32)."""
    def binner(block: torch.Tensor, out: torch.Tensor) -> None:
        torch.sub(block, lo, out=out)
        out.mul_(scale).floor_().clamp_(0, n_bins - 1)
    return binner


def _edge_binner(edges: torch.Tensor) -> Binner:
    """Writes ``#{k: edges[k] <= v}`` for each value into ``out`` (``numpy.digitize``)."""
    def binner(block: torch.Tensor, out: torch.Tensor) -> None:
        out.copy_(torch.searchsorted(edges, block, right=True))
    return binner


def binning_information(
    layers: Sequence[np.ndarray | torch.Tensor],
    y: np.ndarray,
    *,
    n_bins: int = 30,
    bin_range: BinRange = "observed",
    adaptive: bool = False,
    device: str = "cpu",
    seed: int = 0,
    progress: LayerProgress | None = None,
) -> list[BinnedInformation]:
    """I(X;T) and I(T;Y) of each layer's binned activations, in bits.

    Each sample's activation vector is binned value by value; the vector of
    bin indices is a discrete symbol ``T``. With ``X`` the sample identity
    (``n`` equiprobable samples) ``I(X;T) = H(T)``, and
    ``I(T;Y) = H(T) + H(Y) - H(T,Y)``, all exact plug-in entropies over the
    samples. Values are taken at float32 resolution (module docstring: units
    constant up to rounding count as constant, no bin is narrower than the
    resolution). Work is vectorised over samples and features on ``device``;
    the symbols are counted through exact integer projections (module
    docstring), and the counts equal those of ``numpy.unique(bins, axis=0)``.

    Parameters
    ----------
    layers : sequence of arrays, each shape (n_samples, n_features_l)
        Activations of each layer over the same samples (float32 is used).
    y : ndarray, shape (n_samples,)
        Class labels.
    n_bins : int, default 30
        Bins per value (Shwartz-Ziv & Tishby use 30).
    bin_range : "observed" or (lo, hi), default "observed"
        Equal-width bins over ``[min, max]`` of all the layer's values, or over
        a fixed range such as ``(-1, 1)`` for tanh layers; values outside it
        are clipped into the edge bins. Ignored when ``adaptive``. See
        :func:`equal_width_bins` for the exact arithmetic.
    adaptive : bool, default False
        Chelombiev et al. (2019): edges at equal ranks of the layer's pooled
        values (:func:`rank_edges`), so every bin holds about as many values.
    device : str, default "cpu"
    seed : int, default 0
        Seeds the random projections (the result does not depend on it).
    progress : callable, optional
        ``(step, total, {"I_XT", "I_TY"}) -> stop?`` after each layer; when it
        returns True the layers done so far are returned.

    Returns
    -------
    list of BinnedInformation, one per layer (fewer if stopped).

    References
    ----------
    Shwartz-Ziv & Tishby (2017), arXiv:1703.00810; Chelombiev, Houghton &
    O'Donnell (2019), ICLR.
    """
    n_bins = _check_n_bins(n_bins)
    bin_range = _check_bin_range(bin_range)
    if not layers:
        return []
    n = len(layers[0])
    y_codes = _labels(y, n)
    n_classes = int(y_codes.max()) + 1
    h_y = entropy_bits(np.bincount(y_codes))
    y_t = torch.from_numpy(y_codes).to(device)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for step, layer in enumerate(layers, start=1):
        values = torch.as_tensor(layer).to(device=device, dtype=torch.float32)
        if values.ndim != 2 or len(values) != n:
            raise InputError(f"layers[{step - 1}] must have shape ({n}, n_features), "
                             f"got {tuple(values.shape)}")
        resolved = _resolve(values)
        v_min, v_max = resolved.low, resolved.high  # NaN or infinity reaches one of them
        if not (math.isfinite(v_min) and math.isfinite(v_max)):
            raise InputError(f"layers[{step - 1}] contains NaN or infinite values")
        values = resolved.values
        if adaptive:
            edges_np = rank_edges(values, n_bins=n_bins)
            edges = torch.from_numpy(edges_np).to(values.device)
            n_edges, lo, hi = len(edges_np), v_min, v_max
            binner = _edge_binner(edges)
        else:
            lo, scale, bins = _equal_width(v_min, v_max, n_bins, bin_range)
            hi = v_max if bin_range == "observed" else bin_range[1]
            n_edges = bins - 1
            binner = _equal_width_binner(lo, scale, bins)
        weights, dtype = _hash_weights(values.shape[1], n_bins, generator)
        codes = _bin_codes(values, weights, dtype, binner)
        inverse, counts = _partition(codes, generator)
        h_t, i_ty = _mutual_information_from_partition(inverse, counts, y_t, n_classes, h_y)
        results.append(BinnedInformation(h_t, i_ty, len(counts), float(lo), float(hi), n_edges,
                                         int(resolved.constant.sum())))
        if progress is not None and progress(step, len(layers), {"I_XT": h_t, "I_TY": i_ty}):
            break
    return results


# --------------------------------------------------------------------------- KDE


@dataclass(frozen=True)
class KDEInformation:
    """One layer's pairwise-distance (KDE) estimate.

    Attributes
    ----------
    i_xt : float
        Upper bound on I(X;T+Z), bits, Z ~ N(0, noise_variance I).
    i_ty : float
        H(T+Z) - H(T+Z|Y) with the same bound per class, bits.
    noise_variance : float
        The variance of Z that was used (activation units squared).
    constant_units : int
        Units constant at float32 resolution (taken as exactly constant).
    """

    i_xt: float
    i_ty: float
    noise_variance: float
    constant_units: int


def default_noise_variance(values: np.ndarray, *, fraction: float = 0.1) -> float:
    """``fraction`` x the layer's total variance (mean squared distance to the centroid).

    Scale-free: multiplying a layer by ``c`` multiplies the noise variance by
    ``c**2``, so the KDE estimate is unchanged, as the true I(X;T) of a
    deterministic network is unchanged by an invertible rescaling. Units
    constant at float32 resolution count as constant (their rounding noise
    would otherwise set the scale). For a constant layer (total variance 0)
    it returns 1.0, any positive value giving the same (zero) estimate.
    """
    values = _resolve(torch.as_tensor(_layer(values), dtype=torch.float64)).values.numpy()
    total = float(values.var(axis=0).sum())
    return fraction * total if total > 0 else 1.0


def kde_information(values: np.ndarray, y: np.ndarray, *, noise_variance: float | None = None,
                    device: str = "cpu") -> KDEInformation:
    """Kolchinsky-Tracey upper bound on I(X;T) and the matching I(T;Y), in bits.

    Gaussian noise ``Z ~ N(0, sigma^2 I)`` is added to ``T`` (Saxe et al. 2018);
    ``T + Z`` given ``X = i`` is a Gaussian at ``t_i``, so ``T + Z`` is a
    mixture of ``n`` equal Gaussians and

    .. math:: I(X;T+Z) \\le -\\frac{1}{n}\\sum_i \\log \\frac{1}{n}\\sum_j
              \\exp\\left(-\\frac{\\lVert t_i - t_j \\rVert^2}{2\\sigma^2}\\right)

    (nats, converted to bits). The same bound inside each class ``c`` (its
    ``n_c`` samples) bounds ``H(T+Z|Y=c) - H(Z)``, and
    ``I(T;Y) = H(T+Z) - \\sum_c (n_c/n) H(T+Z|Y=c)``. Identical points give 0,
    points much farther apart than ``sigma`` give ``log2(n)``. Units constant
    at float32 resolution are made exactly constant first, so a layer whose
    every unit is constant gives exactly 0. Pairwise squared distances are
    computed in float64 row blocks on ``device``.

    Parameters
    ----------
    values : ndarray, shape (n_samples, n_features)
    y : ndarray, shape (n_samples,)
    noise_variance : float > 0, optional
        ``sigma^2`` in squared activation units. Default:
        :func:`default_noise_variance` (0.1 x the layer's total variance).
    device : str, default "cpu"

    References
    ----------
    Kolchinsky & Tracey (2017), Entropy 19(7) 361; Saxe et al. (2018), ICLR.
    """
    resolved = _resolve(torch.as_tensor(_layer(values), dtype=torch.float64, device=device))
    n = len(resolved.values)
    y_codes = _labels(y, n)
    if noise_variance is None:
        noise_variance = default_noise_variance(resolved.values.cpu().numpy())
    elif not (isinstance(noise_variance, int | float) and math.isfinite(noise_variance)
              and noise_variance > 0):
        raise InputError(f"noise_variance must be a positive number, got {noise_variance!r}")
    n_constant = int(resolved.constant.sum())
    if resolved.constant.all():
        return KDEInformation(0.0, 0.0, float(noise_variance), n_constant)
    t = resolved.values
    t = t - t.mean(dim=0)  # distances are translation invariant; centring limits cancellation
    sq = (t * t).sum(dim=1)
    labels = torch.from_numpy(y_codes).to(device)
    log_class = torch.log(torch.bincount(labels).to(torch.float64))[labels]
    lse_all = torch.empty(n, dtype=torch.float64, device=device)
    lse_class = torch.empty(n, dtype=torch.float64, device=device)
    rows = max(1, _PAIR_BLOCK // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d2 = (sq[start:stop, None] + sq[None, :] - 2.0 * (t[start:stop] @ t.T)).clamp_min_(0.0)
        local = torch.arange(stop - start, device=device)
        d2[local, local + start] = 0.0
        logk = d2.mul_(-0.5 / noise_variance)
        lse_all[start:stop] = torch.logsumexp(logk, dim=1)
        logk.masked_fill_(labels[start:stop, None] != labels[None, :], -math.inf)
        lse_class[start:stop] = torch.logsumexp(logk, dim=1)
    i_xt = math.log(n) - float(lse_all.mean())
    i_ty = float((lse_class - log_class).mean()) - float(lse_all.mean()) + math.log(n)
    return KDEInformation(max(i_xt, 0.0) / _LN2, i_ty / _LN2, float(noise_variance),
                          n_constant)


# --------------------------------------------------------------------------- KSG


def _chebyshev(block: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Max-norm distances (rows of block, points), exact (no matrix-product shortcut)."""
    return torch.cdist(block, points, p=math.inf)


def _continuous(values: np.ndarray, name: str, n: int | None, jitter: float, seed: int,
                device: str) -> tuple[torch.Tensor, bool]:
    """The variable at float32 resolution, jittered, as float64 on ``device``; and whether
    every unit of it is constant (then it carries no information)."""
    resolved = _resolve(torch.as_tensor(_layer(values, name), dtype=torch.float64))
    values = resolved.values.numpy()
    if n is not None and len(values) != n:
        raise InputError(f"{name} must have {n} rows, like the other variable, got {len(values)}")
    if jitter < 0:
        raise InputError(f"jitter must be >= 0, got {jitter}")
    if jitter > 0:  # as scikit-learn: break ties (ReLU zeros), which bias neighbour counts
        rng = np.random.default_rng(seed)
        scale = np.maximum(1.0, np.abs(values).mean(axis=0))
        values = values + jitter * scale * rng.standard_normal(values.shape)
    return torch.as_tensor(values, device=device), bool(resolved.constant.all())


def _check_k(k: object, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < n:
        raise InputError(f"k must be an integer with 1 <= k < n_samples ({n}), got {k!r}")
    return int(k)


def ksg_mi(a: np.ndarray, b: np.ndarray, *, k: int = 3, jitter: float = 0.0, seed: int = 0,
           device: str = "cpu") -> float:
    """Kraskov-Stögbauer-Grassberger estimator 1 of I(A;B) for two continuous variables, in nats.

    .. math:: I = \\psi(k) + \\psi(n) - \\langle \\psi(n_a + 1) + \\psi(n_b + 1) \\rangle

    where :math:`\\varepsilon_i` is the max-norm distance from point ``i`` to
    its ``k``-th neighbour in the joint space and :math:`n_a, n_b` count the
    other points strictly closer than :math:`\\varepsilon_i` in each marginal.
    Same definition and tie handling as scikit-learn's estimator, without its
    clipping at 0 (the estimate can be slightly negative). Both variables are
    taken at float32 resolution (module docstring); one whose every unit is
    constant gives exactly 0. Brute force in row blocks on ``device``: meant
    for low-dimensional variables.

    Parameters
    ----------
    a : ndarray, shape (n_samples,) or (n_samples, d_a)
    b : ndarray, shape (n_samples,) or (n_samples, d_b)
    k : int, default 3
        Neighbours, ``1 <= k < n_samples``.
    jitter : float, default 0
        Relative Gaussian noise added to break ties (0: none).
    seed : int, default 0
        Seeds the jitter.
    device : str, default "cpu"

    Returns
    -------
    float, nats.

    References
    ----------
    Kraskov, Stögbauer & Grassberger (2004), Phys. Rev. E 69, 066138, eq. (8).
    """
    ta, a_constant = _continuous(a, "a", None, jitter, seed, device)
    n = len(ta)
    tb, b_constant = _continuous(b, "b", n, jitter, seed + 1, device)
    k = _check_k(k, n)
    if a_constant or b_constant:
        return 0.0
    counts_a = torch.empty(n, dtype=torch.float64, device=device)
    counts_b = torch.empty(n, dtype=torch.float64, device=device)
    rows = max(1, _PAIR_BLOCK // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        local = torch.arange(stop - start, device=device)
        da, db = _chebyshev(ta[start:stop], ta), _chebyshev(tb[start:stop], tb)
        da[local, local + start] = math.inf
        db[local, local + start] = math.inf
        eps = torch.maximum(da, db).kthvalue(k, dim=1).values
        radius = torch.nextafter(eps, torch.zeros_like(eps))[:, None]
        counts_a[start:stop] = (da <= radius).sum(dim=1)
        counts_b[start:stop] = (db <= radius).sum(dim=1)
    digamma = torch.special.digamma
    constant = digamma(torch.tensor([float(k), float(n)], dtype=torch.float64)).sum()
    return float(constant - (digamma(counts_a + 1) + digamma(counts_b + 1)).mean())


def ksg_label_mi(values: np.ndarray, y: np.ndarray, *, k: int = 3, jitter: float = 0.0,
                 seed: int = 0, device: str = "cpu") -> float:
    """I(T;Y) between a continuous ``T`` and a discrete ``Y`` (Ross 2014), in nats.

    .. math:: I = \\psi(n) + \\langle\\psi(k_i)\\rangle - \\langle\\psi(n_{y_i})\\rangle
              - \\langle\\psi(m_i)\\rangle

    For each sample ``i``, :math:`d_i` is the max-norm distance to its
    :math:`k_i = \\min(k, n_{y_i} - 1)`-th nearest neighbour of the same class
    and :math:`m_i` counts the samples of any class closer than
    :math:`d_i`, ``i`` included. Samples whose class has a single member are
    left out (as scikit-learn does). Same values as scikit-learn's 1-D
    implementation for 1-D ``T``, without its clipping at 0; here ``T`` may
    have several dimensions. ``T`` is taken at float32 resolution (module
    docstring); a ``T`` whose every unit is constant gives exactly 0.

    Parameters
    ----------
    values : ndarray, shape (n_samples,) or (n_samples, d)
    y : ndarray, shape (n_samples,)
    k : int, default 3
    jitter : float, default 0
        Relative Gaussian noise added to break ties (scikit-learn uses 1e-10).
    seed : int, default 0
    device : str, default "cpu"

    Returns
    -------
    float, nats (0 when fewer than two samples share any class, or ``T`` is constant).

    References
    ----------
    Ross (2014), PLoS ONE 9(2) e87357; Kraskov, Stögbauer & Grassberger (2004).
    """
    t, t_constant = _continuous(values, "values", None, jitter, seed, device)
    y_codes = _labels(y, len(t))
    class_size = np.bincount(y_codes)[y_codes]
    keep = class_size > 1
    if keep.sum() < 2 or t_constant:
        return 0.0
    t = t[torch.from_numpy(np.flatnonzero(keep)).to(device)]
    y_codes, class_size = y_codes[keep], class_size[keep]
    n = len(t)
    k = _check_k(k, n)
    labels = torch.from_numpy(y_codes).to(device)
    k_i = torch.from_numpy(np.minimum(k, class_size - 1)).to(device)
    k_max = int(k_i.max())
    m = torch.empty(n, dtype=torch.float64, device=device)
    rows = max(1, _PAIR_BLOCK // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        local = torch.arange(stop - start, device=device)
        dist = _chebyshev(t[start:stop], t)
        same = dist.masked_fill(labels[start:stop, None] != labels[None, :], math.inf)
        same[local, local + start] = math.inf
        nearest = same.topk(k_max, dim=1, largest=False).values
        d_k = nearest.gather(1, (k_i[start:stop] - 1)[:, None])
        radius = torch.nextafter(d_k, torch.zeros_like(d_k))
        m[start:stop] = (dist <= radius).sum(dim=1)
    digamma = torch.special.digamma
    sizes = torch.from_numpy(class_size.astype(np.float64)).to(device)
    return float(digamma(torch.tensor(float(n), dtype=torch.float64))
                 + digamma(k_i.to(torch.float64)).mean() - digamma(sizes).mean()
                 - digamma(m).mean())
