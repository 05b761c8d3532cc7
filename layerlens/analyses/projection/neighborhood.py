"""Quality of a 2-D projection: neighbourhood hit and trustworthiness.

Both metrics compare each point's ``k`` nearest neighbours in the projection
with something it should agree with: its class (neighbourhood hit) or its
neighbours in the original space (trustworthiness). The point itself is never
its own neighbour. Ranks in the original space break ties in distance by
sample index (a stable sort), so trustworthiness is deterministic.

References
----------
Paulovich, F. V., Nonato, L. G., Minghim, R. & Levkowitz, H. (2008).
    Least square projection: a fast high-precision multidimensional projection
    technique and its application to document mapping. IEEE TVCG 14(3).
    (neighbourhood hit)
Venna, J. & Kaski, S. (2001). Neighborhood preservation in nonlinear
    projection methods: an experimental study. ICANN 2001, LNCS 2130.
    (trustworthiness)
Rauber, P. E., Fadel, S. G., Falcão, A. X. & Telea, A. C. (2017). Visualizing
    the hidden activity of artificial neural networks. IEEE TVCG 23(1).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from layerlens.errors import InputError

#: Rows of the (rows, n) distance block computed at once by :func:`trustworthiness`.
_CHUNK_ELEMENTS = 1 << 22


def _check_k(k: object, n: int, *, limit: float, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {k!r}")
    if not 1 <= k < limit:
        raise InputError(f"k must satisfy 1 <= k < {what} (n_points = {n}), got {k}")
    return int(k)


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or len(array) == 0:
        raise InputError(f"{name} must have shape (n_points, n_features), got {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def projection_neighbors(embedding: np.ndarray, *, k: int) -> np.ndarray:
    """Indices of each point's ``k`` nearest neighbours in the projection, self excluded.

    Parameters
    ----------
    embedding : ndarray, shape (n_points, n_dims)
        The projected points (any units; Euclidean distance).
    k : int
        Neighbours per point, ``1 <= k < n_points``.

    Returns
    -------
    ndarray, shape (n_points, k), int64
        Row ``i`` lists the neighbours of point ``i``, nearest first. A
        duplicate of point ``i`` at distance 0 is a neighbour; ``i`` is not.
    """
    embedding = _as_2d(embedding, "embedding").astype(np.float64, copy=False)
    n = len(embedding)
    k = _check_k(k, n, limit=n, what="n_points")
    # Query k + 1 with the points themselves, then drop each row's own index: unlike
    # ``kneighbors()`` without X, this is exact for duplicated points as well.
    finder = NearestNeighbors(n_neighbors=k + 1, algorithm="kd_tree" if embedding.shape[1] <= 3
                              else "auto").fit(embedding)
    distances, found = finder.kneighbors(embedding)
    # Stable order among equal distances: by index, with the point itself first.
    own: np.ndarray = found == np.arange(n)[:, None]
    order = np.lexsort((found, ~own, distances), axis=1)
    found = np.take_along_axis(found, order, axis=1)
    own = np.take_along_axis(own, order, axis=1)
    # Each row holds its own index exactly once unless k + 1 duplicates crowd it out.
    has_own = own.any(axis=1, keepdims=True)
    keep = np.where(has_own, ~own, np.arange(k + 1)[None, :] < k)
    return found[keep].reshape(n, k).astype(np.int64)


def neighborhood_hit(embedding: np.ndarray, labels: np.ndarray, *, k: int = 6) -> float:
    """Mean fraction of each point's ``k`` projection neighbours that share its class.

    .. math:: NH(k) = \\frac{1}{n} \\sum_i \\frac{|\\{j \\in N_k(i): y_j = y_i\\}|}{k}

    where :math:`N_k(i)` are the ``k`` nearest neighbours of point ``i`` in the
    projection, ``i`` itself excluded.

    Parameters
    ----------
    embedding : ndarray, shape (n_points, n_dims)
        The projection (usually 2-D).
    labels : ndarray, shape (n_points,)
        Class of each point (any hashable values).
    k : int, default 6
        Neighbourhood size, ``1 <= k < n_points`` (Rauber et al. 2017 use 6).

    Returns
    -------
    float in [0, 1]
        1 when every neighbourhood is pure; about :math:`\\sum_c p_c^2` for
        labels unrelated to the projection (class shares :math:`p_c`).

    References
    ----------
    Paulovich et al. (2008), IEEE TVCG 14(3); Rauber et al. (2017), IEEE TVCG 23(1).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(embedding):
        raise InputError(f"labels must have shape ({len(embedding)},), got {labels.shape}")
    neighbors = projection_neighbors(embedding, k=k)
    return float(np.mean(labels[neighbors] == labels[:, None]))


def trustworthiness(data: np.ndarray, embedding: np.ndarray, *, k: int = 5,
                    device: str = "cpu") -> float:
    """Trustworthiness of a projection: are its neighbours true neighbours?

    .. math:: T(k) = 1 - \\frac{2}{n k (2n - 3k - 1)} \\sum_i
              \\sum_{j \\in U_k(i)} (r(i, j) - k)

    where :math:`U_k(i)` are the points among the ``k`` projection neighbours
    of ``i`` that are not among its ``k`` nearest neighbours in ``data``, and
    :math:`r(i, j)` is the rank of ``j`` by distance from ``i`` in ``data``
    (1 = nearest, ``i`` excluded, ties broken by index). Same value as
    :func:`sklearn.manifold.trustworthiness`, which breaks ties arbitrarily,
    but in O(n) memory: distances are computed in row blocks on ``device``
    instead of as one (n, n) matrix with a full argsort.

    Parameters
    ----------
    data : ndarray, shape (n_points, n_features)
        The original points (here: a layer's activations), Euclidean distance.
    embedding : ndarray, shape (n_points, n_dims)
        Their projection.
    k : int, default 5
        Neighbourhood size, ``1 <= k < n_points / 2``.
    device : str, default "cpu"
        Torch device for the distance blocks (``cuda`` when present).

    Returns
    -------
    float in [0, 1]
        1 when no projection neighbour is a false neighbour (an isometry).

    References
    ----------
    Venna, J. & Kaski, S. (2001). Neighborhood preservation in nonlinear
    projection methods: an experimental study. ICANN 2001, LNCS 2130, 485-491.
    """
    data = _as_2d(data, "data")
    embedding = _as_2d(embedding, "embedding")
    n = len(data)
    if len(embedding) != n:
        raise InputError(f"embedding must have {n} rows like data, got {len(embedding)}")
    k = _check_k(k, n, limit=n / 2, what="n_points / 2")
    neighbors = torch.from_numpy(projection_neighbors(embedding, k=k)).to(device)
    points = torch.as_tensor(data, dtype=torch.float64, device=device)
    norms = (points * points).sum(1)
    index = torch.arange(n, device=device)
    rows = max(1, _CHUNK_ELEMENTS // n)
    penalty = 0.0
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        # Squared distances in float64: monotone in distance, exact for integer-valued data.
        dist = norms[start:stop, None] + norms[None, :] - 2.0 * points[start:stop] @ points.T
        dist[torch.arange(stop - start, device=device), index[start:stop]] = float("inf")
        # r(i, j) = 1 + #{m: d(i, m) < d(i, j)} + #{m < j: d(i, m) = d(i, j)}: the 1-based
        # position of j in a stable sort of row i, where i itself (at +inf) comes last.
        targets = neighbors[start:stop]
        target_dist = dist.gather(1, targets)
        rank = torch.ones_like(targets)
        for column in range(k):
            here = target_dist[:, column:column + 1]
            rank[:, column] += (dist < here).sum(1) + (
                (dist == here) & (index[None, :] < targets[:, column:column + 1])).sum(1)
        penalty += float(torch.clamp(rank - k, min=0).sum())
    return 1.0 - 2.0 * penalty / (n * k * (2.0 * n - 3.0 * k - 1.0))
