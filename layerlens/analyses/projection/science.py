"""Layer projections: each layer's activations drawn as a 2-D scatter coloured by class.

Following Rauber et al. (2017), every sample's activation vector in a layer
is projected to 2-D (t-SNE by default, or PCA, or UMAP) and the projection is
scored by its neighbourhood hit (how well classes separate in the picture)
and its trustworthiness (whether neighbours in the picture are neighbours in
the layer). Rising neighbourhood hit with depth shows a network separating
the classes layer by layer.

Choices, stated in the report section:

- Raw activations, not standardised, as in Rauber et al.: distances are in
  the layer's own units, so the units that vary most (what the next layer
  sees most strongly) dominate. Layers the capture reduced (spatial mean,
  random projection) are projected as stored.
- t-SNE and UMAP on a layer with more than 50 features first reduce it to
  its first 50 principal components (``pca_preprocessing: 50``), standard
  practice that removes noise and cost; trustworthiness is always measured
  against the full stored activations, not the 50 components.
- t-SNE is openTSNE with perplexity 30 (less when there are fewer than 91
  points): FFT-accelerated interpolation from 10,000 points (grid cells 3
  units wide, at least 20 per axis), Barnes-Hut below, as openTSNE
  chooses. UMAP is umap-learn with 15 neighbours.
- ``k`` (default 6) is the neighbourhood size of both metrics.
- ``max_samples`` draws a seeded, class-stratified subsample; the section
  says so (``subsampled_from``) and saves the chosen rows.

References
----------
Rauber, P. E., Fadel, S. G., Falcão, A. X. & Telea, A. C. (2017). Visualizing
    the hidden activity of artificial neural networks. IEEE TVCG 23(1), 101-110.
van der Maaten, L. & Hinton, G. (2008). Visualizing data using t-SNE. JMLR 9.
Linderman, G. C. et al. (2019). Fast interpolation-based t-SNE for improved
    visualization of single-cell RNA-seq data. Nature Methods 16.
Poličar, P. G., Stražar, M. & Zupan, B. (2024). openTSNE: a modular Python
    library for t-SNE dimensionality reduction and embedding. JSS 109(3).
McInnes, L., Healy, J. & Melville, J. (2018). UMAP: uniform manifold
    approximation and projection for dimension reduction. arXiv:1802.03426.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from layerlens.analyses.projection.neighborhood import neighborhood_hit, trustworthiness
from layerlens.errors import InputError

Method = Literal["tsne", "pca", "umap"]
METHODS: tuple[str, ...] = ("tsne", "pca", "umap")
#: Layers wider than this are reduced to this many principal components before t-SNE/UMAP.
PCA_PREPROCESSING = 50
# Exact nearest neighbours for the t-SNE affinities up to this many points: at 10,000
# points in 50-D they take 0.7 s against 3.9 s for openTSNE's approximate (Annoy) search.
_EXACT_NEIGHBORS_UP_TO = 20_000
TSNE_PERPLEXITY = 30.0
UMAP_NEIGHBORS = 15
_TSNE_THREADED_FROM = 1000
_FFT_INTS_IN_INTERVAL = 3
_FFT_MIN_INTERVALS = 20
#: PCA uses a dense eigensolver up to this matrix size, Lanczos iteration above.
_DENSE_EIGEN_LIMIT = 256


@dataclass(frozen=True)
class LayerProjection:
    """One layer's 2-D projection and its quality.

    Attributes
    ----------
    coordinates : ndarray, shape (n_points, 2), float32
        The projection (PCA: in activation units; t-SNE/UMAP: arbitrary).
    neighborhood_hit : float in [0, 1]
        NH(k) of ``coordinates`` against the labels.
    trustworthiness : float in [0, 1]
        T(k) of ``coordinates`` against the layer's activations.
    pca_preprocessing : int or None
        Principal components the method ran on, when the layer was reduced first.
    parameters : dict
        Method parameters actually used (``perplexity``, ``n_neighbors``).
    """

    coordinates: np.ndarray
    neighborhood_hit: float
    trustworthiness: float
    pca_preprocessing: int | None = None
    parameters: dict[str, float] = field(default_factory=dict)


def _check_values(values: np.ndarray, name: str = "values") -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2 or len(values) < 2:
        raise InputError(f"{name} must have shape (n_points >= 2, n_features), got {values.shape}")
    if not np.isfinite(values).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return values


def pca_embedding(values: np.ndarray, *, n_components: int = 2, seed: int = 0,
                  device: str = "cpu") -> np.ndarray:
    """Scores on the leading principal components (centred, not scaled).

    The covariance (d <= n) or Gram (n < d) matrix is formed in float64 on
    ``device``; its leading eigenvectors come from a dense eigensolver when it
    is small and from Lanczos iteration (ARPACK, converged to machine
    precision, seeded start vector) otherwise, so the result is exact PCA,
    not a randomized approximation. Each component's sign makes its
    largest-magnitude score positive, so the result does not depend on the
    solver or device. Components beyond the data's rank are zeros.

    Parameters
    ----------
    values : ndarray, shape (n_points, n_features)
    n_components : int, default 2
    seed : int, default 0
        Seeds the Lanczos start vector.
    device : str, default "cpu"
        Torch device for the matrix products.

    Returns
    -------
    ndarray, shape (n_points, n_components), float64
        In the units of ``values``.

    References
    ----------
    Pearson, K. (1901). On lines and planes of closest fit to systems of points
    in space. Phil. Mag. 2(11). Lehoucq, R. B., Sorensen, D. C. & Yang, C.
    (1998). ARPACK users' guide. SIAM.
    """
    from scipy.sparse.linalg import eigsh

    values = _check_values(values)
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise InputError(f"n_components must be a positive integer, got {n_components!r}")
    x = torch.as_tensor(values, dtype=torch.float64, device=device)
    x = x - x.mean(dim=0, keepdim=True)
    n, d = x.shape
    rank = min(n_components, n - 1, d)
    gram = d > n
    matrix = (x @ x.T if gram else x.T @ x).cpu().numpy()
    size = len(matrix)
    if size <= _DENSE_EIGEN_LIMIT or rank >= size - 1:
        eigenvalues, vectors = np.linalg.eigh(matrix)
    else:
        start = np.random.default_rng(seed).standard_normal(size)
        eigenvalues, vectors = eigsh(matrix, k=rank, which="LA", v0=start)
    top = np.argsort(eigenvalues)[::-1][:rank]
    basis = torch.as_tensor(vectors[:, top].copy(), device=device)
    if gram:
        scores = basis * torch.as_tensor(np.sqrt(np.clip(eigenvalues[top], 0, None)),
                                         device=device)
    else:
        scores = x @ basis
    signs = torch.sign(scores.gather(0, scores.abs().argmax(dim=0, keepdim=True)))
    scores = scores * torch.where(signs == 0, 1.0, signs)
    out = np.zeros((n, n_components))
    out[:, :rank] = scores.cpu().numpy()
    return out


def tsne_embedding(values: np.ndarray, *, perplexity: float = TSNE_PERPLEXITY, seed: int = 0,
                   n_jobs: int | None = None, init: np.ndarray | None = None) -> np.ndarray:
    """2-D t-SNE (openTSNE; PCA initialisation, learning rate n/12, 125 + 250 iterations).

    125 early-exaggeration and 250 normal iterations instead of openTSNE's
    250 + 500: on raw digits (1797 points) NH(6) 0.9835 vs 0.9829 and
    trustworthiness(5) 0.9949 vs 0.9946, in 2.1 s instead of 4.9 s on 2 cores;
    a report runs t-SNE once per layer.

    Repulsive forces by Barnes-Hut below 10,000 points and by FFT-accelerated
    interpolation (FIt-SNE) from 10,000, openTSNE's choice of the faster one;
    the interpolation grid has cells 3 embedding units wide (openTSNE's
    default is 1) and at least 20 intervals per axis (openTSNE: 50), several
    times faster at 10,000 points with about the same neighbourhood hit
    (measurements beside the call).

    Parameters
    ----------
    values : ndarray, shape (n_points, n_features)
    perplexity : float, default 30
        Effective neighbourhood size, ``0 < perplexity < n_points``.
    seed : int, default 0
    n_jobs : int, optional
        Threads; default torch's thread count, or 1 below 1,000 points, where
        thread start-up and synchronisation cost more than they save.
    init : ndarray, shape (n_points, 2), optional
        Start from this embedding (e.g. the same points' embedding at the previous
        training checkpoint, so that successive panels are comparable, Rauber et al.
        2017), rescaled to openTSNE's initial standard deviation 1e-4; default PCA.

    Returns
    -------
    ndarray, shape (n_points, 2), float64, arbitrary units.

    References
    ----------
    van der Maaten & Hinton (2008), JMLR 9; Linderman et al. (2019), Nature
    Methods 16; Poličar et al. (2024), JSS 109(3).
    """
    from openTSNE import TSNE
    from openTSNE.initialization import rescale

    values = _check_values(values)
    if not 0 < perplexity < len(values):
        raise InputError(f"perplexity must be in (0, n_points = {len(values)}), got {perplexity}")
    if init is not None and np.shape(init) != (len(values), 2):
        raise InputError(f"init must have shape ({len(values)}, 2), got {np.shape(init)}")
    if n_jobs is None:
        n_jobs = 1 if len(values) < _TSNE_THREADED_FROM else torch.get_num_threads()
    # FFT path (openTSNE uses it from 10,000 points): interpolation cells 3 embedding units
    # wide instead of 1. On 10,000 jittered digits (benchmarks/projection.py, 2 cores): at
    # 250+500 iterations, cells of 1 and 2 units took 81 s and 29 s (NH(6) 0.9966, 0.9969);
    # at 125+250 iterations, cells of 2 and 3 units took 10.3 s and 7.0 s (0.9964, 0.9968).
    # At least 20 intervals per axis instead of openTSNE's 50: the grid then follows the cell
    # width once the embedding is ~60 units wide; 5.3 s instead of 9.4 s (three interleaved
    # runs each, same machine), NH(6) 0.9959 instead of 0.9968.
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs,
                ints_in_interval=_FFT_INTS_IN_INTERVAL, min_num_intervals=_FFT_MIN_INTERVALS,
                early_exaggeration_iter=125,
                n_iter=250, neighbors="exact" if len(values) <= _EXACT_NEIGHBORS_UP_TO else "auto",
                verbose=False,
                initialization="pca" if init is None else rescale(np.array(init, dtype=np.float64)))
    return np.asarray(tsne.fit(np.ascontiguousarray(values, dtype=np.float64)), dtype=np.float64)


def umap_embedding(values: np.ndarray, *, n_neighbors: int = UMAP_NEIGHBORS,
                   seed: int = 0) -> np.ndarray:
    """2-D UMAP (umap-learn, seeded, hence single-threaded).

    Parameters
    ----------
    values : ndarray, shape (n_points, n_features)
    n_neighbors : int, default 15
        ``2 <= n_neighbors < n_points``.
    seed : int, default 0

    Returns
    -------
    ndarray, shape (n_points, 2), float64, arbitrary units.

    References
    ----------
    McInnes, Healy & Melville (2018), arXiv:1802.03426.
    """
    values = _check_values(values)
    if not 2 <= n_neighbors < len(values):
        raise InputError(f"n_neighbors must be in [2, n_points = {len(values)}), "
                         f"got {n_neighbors}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba/umap chatter: "n_jobs overridden by random_state"
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed)
        return np.asarray(reducer.fit_transform(values.astype(np.float32)), dtype=np.float64)


def project_layer(values: np.ndarray, labels: np.ndarray, *, method: Method = "tsne",
                  k: int = 6, seed: int = 0, device: str = "cpu",
                  init: np.ndarray | None = None) -> LayerProjection:
    """Project one layer's activations to 2-D and score the projection.

    Parameters
    ----------
    values : ndarray, shape (n_points, n_features)
        Raw activations (not standardised, as in Rauber et al. 2017).
    labels : ndarray, shape (n_points,)
        Class of each point.
    method : {"tsne", "pca", "umap"}, default "tsne"
        t-SNE and UMAP run on the first 50 principal components when
        ``n_features > 50``.
    k : int, default 6
        Neighbourhood size of neighbourhood hit and trustworthiness,
        ``1 <= k < n_points / 2``.
    seed : int, default 0
    device : str, default "cpu"
        Torch device for PCA and trustworthiness.
    init : ndarray, shape (n_points, 2), optional
        t-SNE only: the embedding to start from (:func:`tsne_embedding`).

    Returns
    -------
    LayerProjection

    References
    ----------
    Rauber et al. (2017), IEEE TVCG 23(1).
    """
    values = _check_values(values)
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n = len(values)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n / 2:
        raise InputError(f"k must be an integer with 1 <= k < n_points / 2 "
                         f"(n_points = {n}), got {k!r}")
    parameters: dict[str, float] = {}
    reduced: int | None = None
    if method == "pca":
        coordinates = pca_embedding(values, n_components=2, seed=seed, device=device)
    else:
        source = values
        if values.shape[1] > PCA_PREPROCESSING:
            source = pca_embedding(values, n_components=PCA_PREPROCESSING, seed=seed,
                                   device=device)
            reduced = PCA_PREPROCESSING
        if method == "tsne":
            perplexity = min(TSNE_PERPLEXITY, (n - 1) / 3.0)
            parameters["perplexity"] = perplexity
            coordinates = tsne_embedding(source, perplexity=perplexity, seed=seed, init=init)
        else:
            n_neighbors = min(UMAP_NEIGHBORS, n - 1)
            parameters["n_neighbors"] = n_neighbors
            coordinates = umap_embedding(source, n_neighbors=n_neighbors, seed=seed)
    coordinates = coordinates.astype(np.float32)
    return LayerProjection(
        coordinates=coordinates,
        neighborhood_hit=neighborhood_hit(coordinates, labels, k=k),
        trustworthiness=trustworthiness(values, coordinates, k=k, device=device),
        pca_preprocessing=reduced, parameters=parameters)
