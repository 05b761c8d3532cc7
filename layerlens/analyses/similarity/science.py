"""Linear CKA between every pair of layers, from centred Gram matrices.

Centred kernel alignment (Kornblith et al. 2019) compares two representations
``X`` (n, d1) and ``Y`` (n, d2) of the same n samples through their linear
kernels ``K = Xc Xc^T`` and ``L = Yc Yc^T`` (``Xc``: columns centred)::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

It is 1 when ``Y`` is ``X`` rotated and scaled (``Y = a X Q``, ``Q``
orthogonal), whatever d1 and d2, and a similarity, not a distance. The
biased HSIC (Gretton et al. 2005) is ``<H K H, H L H> / (n-1)^2``; it makes
unrelated wide representations look similar at small n (independent Gaussian
data at n = 1000, d = 512 scores about 0.3). The unbiased estimator of Song et
al. (2012) removes that bias: it is ``<U(K), U(L)> / (n (n-3))`` with ``U`` the
U-centring of Székely & Rizzo (2014) (zero diagonal, rows and columns
centred with the ``n - 2`` denominators), the form Kornblith et al. use for
its numerical stability. Both estimators are inner products of centred Grams,
so every pair comes from ONE matrix product: the centred Grams flattened into
rows ``S`` (layers, n^2), ``S_a S_b^T`` the HSIC of every pair and the
diagonal of ``S S^T`` the normalisers. ``HSIC(K, K) = ||U(K)||^2 >= 0``, so
the normaliser is never negative and the estimate never NaN; a layer whose
normaliser is 0 (constant activations) has no CKA and is reported as such.

Memory: a Gram is n^2 float64 values, accumulated from column slices of at
most :data:`SLICE_BYTES` (so a layer's width costs time, not memory); the
Grams held at once are bounded by ``budget_bytes``, beyond which the layers
are taken in groups and a group's Grams are recomputed for each block of the
matrix.

References
----------
.. [1] S. Kornblith, M. Norouzi, H. Lee and G. Hinton, "Similarity of neural
   network representations revisited", ICML 2019.
.. [2] L. Song, A. Smola, A. Gretton, J. Bedo and K. Borgwardt, "Feature
   selection via dependence maximization", JMLR 13, 2012.
.. [3] G. J. Székely and M. L. Rizzo, "Partial distance correlation with
   methods for dissimilarities", Annals of Statistics 42(6), 2014.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from layerlens.capture import ProgressCallback
from layerlens.errors import InputError

#: float64 values of one column slice while a Gram is accumulated (32 MiB).
SLICE_BYTES = 32 * 1024**2
#: Gram matrices held at once (float64 n^2 each), besides two being formed.
GRAM_BUDGET_BYTES = 1024**3
#: A layer is constant when its centred sum of squares is at most this share of its sum of
#: squares: variation below float32 resolution (eps^2 ~ 1.4e-14) is rounding, not signal.
CONSTANT_RTOL = float(np.finfo(np.float32).eps) ** 2
#: Debiased: ``||U(K)||^2`` at most this share of ``||H K H||^2`` counts as 0.
UNBIASED_RTOL = 1e-12

NOT_FINITE = "activations contain NaN or infinite values"
CONSTANT = "activations are the same for every sample: CKA is 0/0, undefined"
NO_UNBIASED_HSIC = ("the unbiased HSIC of this layer with itself is 0 (too few distinct "
                    "samples): debiased CKA is undefined")


@dataclass(frozen=True)
class CkaResult:
    """CKA between two lists of layers.

    Attributes
    ----------
    matrix : ndarray (n_rows, n_cols), float64 in [-1, 1] (debiased may be negative,
        biased is in [0, 1]); NaN where undefined or not computed.
    undefined_rows, undefined_cols : index -> why that row or column is NaN.
    complete : False when the progress callback stopped the computation.
    """

    matrix: np.ndarray
    undefined_rows: dict[int, str]
    undefined_cols: dict[int, str]
    complete: bool


class _Stopped(Exception):
    """The progress callback asked to stop."""


def centred_gram(values: np.ndarray, *, device: str = "cpu", out: torch.Tensor | None = None,
                 slice_bytes: int = SLICE_BYTES) -> tuple[torch.Tensor, float]:
    """The centred linear kernel ``Xc Xc^T`` of one layer, accumulated over column slices.

    Parameters
    ----------
    values : ndarray (n, d), any float dtype: one row per sample.
    device : torch device of the result. On the CPU the products are numpy's: a matrix
        times its own transpose runs BLAS ``syrk``, half the work of torch's ``addmm``.
    out : optional contiguous float64 tensor (n, n) on ``device`` to write the Gram into.
    slice_bytes : bound on the float64 copy of one slice of columns (n x width).

    Returns
    -------
    gram : tensor (n, n), float64 on ``device`` (``out`` when given); each column is
        centred in float64 before its outer products are summed, so slicing changes only
        rounding.
    sum_squares : sum of the uncentred squared values (for the constancy test).
    """
    n, d = values.shape
    width = max(1, slice_bytes // (8 * max(n, 1)))
    gram = torch.empty((n, n), dtype=torch.float64, device=device) if out is None else out
    sum_squares = 0.0
    for start in range(0, d, width):
        if gram.device.type == "cpu":
            part = values[:, start:start + width].astype(np.float64)
            sum_squares += float(np.vdot(part, part))
            part -= part.mean(axis=0)
            if start == 0:
                np.matmul(part, part.T, out=gram.numpy())
            else:
                gram.numpy()[...] += part @ part.T
            continue
        chunk = torch.from_numpy(np.ascontiguousarray(values[:, start:start + width]))
        chunk = chunk.to(device).to(torch.float64)
        sum_squares += float(torch.dot(chunk.view(-1), chunk.view(-1)))
        chunk -= chunk.mean(dim=0)
        if start == 0:
            torch.matmul(chunk, chunk.T, out=gram)
        else:
            gram.addmm_(chunk, chunk.T)
    return gram, sum_squares


def unbiased_centre(gram: torch.Tensor) -> torch.Tensor:
    """U-centring (Székely & Rizzo 2014), in place: ``<U(K), U(L)> / (n (n-3))`` is the
    unbiased HSIC of Song et al. (2012). ``gram`` (n, n), n >= 4; returns it."""
    n = gram.shape[0]
    gram.fill_diagonal_(0.0)
    means = gram.sum(dim=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    gram.fill_diagonal_(0.0)
    return gram


def cka_matrix(rows: Sequence[np.ndarray], cols: Sequence[np.ndarray] | None = None, *,
               debiased: bool = False, device: str = "cpu",
               budget_bytes: int = GRAM_BUDGET_BYTES,
               progress: ProgressCallback | None = None) -> CkaResult:
    """Linear CKA between every layer of ``rows`` and every layer of ``cols``.

    Parameters
    ----------
    rows, cols : sequences of arrays (n, d_i), the same n samples in the same order;
        ``cols`` None compares ``rows`` with themselves (a symmetric matrix, each Gram
        formed once when they fit in ``budget_bytes``).
    debiased : unbiased HSIC (Song et al. 2012) instead of the biased estimator.
    device : ``cpu`` or ``cuda``.
    budget_bytes : bound on the float64 Grams held at once (n^2 * 8 bytes each).
    progress : ``(step, total, metrics) -> stop?`` after each Gram matrix formed.

    Returns
    -------
    CkaResult; a stop leaves the pairs not computed NaN and ``complete`` False.
    """
    symmetric = cols is None
    columns = rows if cols is None else cols
    n = _check(rows, columns, debiased=debiased, budget_bytes=budget_bytes)
    row_groups, col_groups = _groups(len(rows), len(columns), budget_bytes // (8 * n * n),
                                     symmetric=symmetric)

    def partners(i: int) -> range:  # the column groups of row group i: by symmetry j >= i
        return range(i, len(col_groups)) if symmetric else range(len(col_groups))

    counter = _Counter(progress, total=len(rows) + sum(
        len(col_groups[j]) for i in range(len(row_groups)) for j in partners(i)
        if not (symmetric and i == j)))
    inner = np.full((len(rows), len(columns)), np.nan)
    norm_rows = np.full(len(rows), np.nan)  # ||centred Gram||^2 of each layer
    norm_cols = norm_rows if symmetric else np.full(len(columns), np.nan)
    why_rows: dict[int, str] = {}
    why_cols: dict[int, str] = why_rows if symmetric else {}
    complete = True
    try:
        for i, group_a in enumerate(row_groups):
            stack_a, norm_rows[group_a] = _stack(rows, group_a, why_rows, debiased=debiased,
                                                 device=device, counter=counter)
            for j in partners(i):
                group_b = col_groups[j]
                if symmetric and i == j:
                    stack_b = stack_a
                else:
                    stack_b, norm_cols[group_b] = _stack(columns, group_b, why_cols,
                                                         debiased=debiased, device=device,
                                                         counter=counter)
                block = (stack_a @ stack_b.T).cpu().numpy()
                inner[np.ix_(group_a, group_b)] = block
                if symmetric:
                    inner[np.ix_(group_b, group_a)] = block.T
                del stack_b
    except _Stopped:
        complete = False
    matrix = _normalised(inner, norm_rows, norm_cols, set(why_rows), set(why_cols))
    return CkaResult(matrix, dict(why_rows), dict(why_cols), complete)


class _Counter:
    """Counts Grams formed and asks the progress callback whether to go on."""

    def __init__(self, progress: ProgressCallback | None, *, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None and self.progress(self.done, self.total, {}):
            raise _Stopped


def _check(rows: Sequence[np.ndarray], cols: Sequence[np.ndarray], *, debiased: bool,
           budget_bytes: int) -> int:
    if not rows or not cols:
        raise InputError("CKA needs at least one layer on each side")
    shapes = {np.shape(values) for values in [*rows, *cols]}
    if any(len(shape) != 2 for shape in shapes):
        raise InputError("CKA takes layers as (n_samples, n_features) arrays")
    sizes = {shape[0] for shape in shapes}
    if len(sizes) != 1:
        raise InputError(f"CKA compares the same samples: the layers have "
                         f"{sorted(sizes)} rows")
    n = sizes.pop()
    least = 4 if debiased else 2
    if n < least:
        raise InputError(f"{'debiased ' if debiased else ''}CKA needs at least {least} "
                         f"samples, got {n}")
    if budget_bytes < 2 * 8 * n * n:
        raise InputError(f"CKA of {n} samples holds Gram matrices of {8 * n * n / 2**20:.0f} "
                         f"MiB; two of them exceed the budget of {budget_bytes / 2**20:.0f} "
                         "MiB: compare fewer samples (similarity.max_samples)")
    return int(n)


def _groups(n_rows: int, n_cols: int, fits: int, *, symmetric: bool
            ) -> tuple[list[list[int]], list[list[int]]]:
    """Layer indices in groups whose Grams fit: ``fits`` Grams at once (at least 2)."""
    if symmetric and n_rows <= fits:
        groups = [list(range(n_rows))]
        return groups, groups
    if not symmetric and n_rows + n_cols <= fits:
        return [list(range(n_rows))], [list(range(n_cols))]
    size_a = min(n_rows, fits // 2)
    size_b = size_a if symmetric else min(n_cols, fits - size_a)
    return ([list(range(s, min(s + size_a, n_rows))) for s in range(0, n_rows, size_a)],
            [list(range(s, min(s + size_b, n_cols))) for s in range(0, n_cols, size_b)])


def _stack(layers: Sequence[np.ndarray], group: Sequence[int], why: dict[int, str], *,
           debiased: bool, device: str, counter: _Counter) -> tuple[torch.Tensor, np.ndarray]:
    """The centred (debiased: U-centred) Grams of ``group`` flattened, (len(group), n^2),
    and their squared norms (the HSIC of each layer with itself, times (n-1)^2 or
    n (n-3)). A layer with no CKA gets a zero row and its reason in ``why``."""
    n = layers[group[0]].shape[0]
    stack = torch.empty((len(group), n * n), dtype=torch.float64, device=device)
    norms = np.zeros(len(group))
    for row, index in enumerate(group):
        values, flat = layers[index], stack[row]
        reason = NOT_FINITE if not np.isfinite(values).all() else None
        if reason is None:
            gram, sum_squares = centred_gram(values, device=device, out=flat.view(n, n))
            norms[row] = float(torch.dot(flat, flat))
            if float(gram.trace()) <= CONSTANT_RTOL * sum_squares:
                reason = CONSTANT
            elif debiased:
                biased_norm = norms[row]
                unbiased_centre(gram)
                norms[row] = float(torch.dot(flat, flat))
                if norms[row] <= UNBIASED_RTOL * biased_norm:
                    reason = NO_UNBIASED_HSIC
        if reason is not None:
            why[index] = reason
            flat.zero_()
            norms[row] = 0.0
        counter.step()
    return stack, norms


def _normalised(inner: np.ndarray, norm_rows: np.ndarray, norm_cols: np.ndarray,
                bad_rows: set[int], bad_cols: set[int]) -> np.ndarray:
    """``inner / sqrt(norm_rows norm_cols)`` clipped to [-1, 1] (Cauchy-Schwarz; rounding
    can pass 1 by an ulp); NaN for undefined layers and pairs not computed."""
    scale = np.sqrt(np.outer(norm_rows, norm_cols))
    defined = np.isfinite(inner) & np.isfinite(scale)
    defined[sorted(bad_rows), :] = False
    defined[:, sorted(bad_cols)] = False
    matrix = np.full(inner.shape, np.nan)
    matrix[defined] = np.clip(inner[defined] / scale[defined], -1.0, 1.0)
    return matrix
