"""Linear classifier probes: how linearly decodable the labels are at each layer.

For every layer a multinomial logistic regression (a *probe*) is trained on
the layer's standardised activations over a train split and scored on a
held-out test split (Alain & Bengio 2016). The probe is the one
scikit-learn's ``LogisticRegression()`` fits (L2 penalty ``0.5 ||W||^2 / C``
added to the summed cross-entropy, intercept not penalised), so numbers are
comparable; but all layers are fit together on torch: layers are grouped by
width, padded with zero feature columns to the group's widest layer (a zero
column keeps a zero weight under the L2 penalty, so the optimum is
unchanged) and one L-BFGS run minimises the sum of the group's objectives,
which is separable, so its optimum is every layer's own optimum. A layer
much wider than the train split is fit in the row space of its train
activations (:func:`row_space`): the same problem, with width at most n_train.

References
----------
.. [1] G. Alain and Y. Bengio, "Understanding intermediate layers using
   linear classifier probes", arXiv:1610.01644, 2016.
.. [2] D. C. Liu and J. Nocedal, "On the limited memory BFGS method for
   large scale optimization", Mathematical Programming 45, 1989.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from layerlens.analyses.lbfgs import LBFGS_HISTORY, SOLVER_VECTORS, BatchedLBFGS
from layerlens.capture import ProgressCallback
from layerlens.errors import InputError
from layerlens.resolution import constant_at_resolution

#: L-BFGS iterations between two progress reports (and convergence checks).
CHUNK_ITERATIONS = 25
#: Default bound on one group's standardised activations held on the device.
DEFAULT_GROUP_BYTES = 512 * 1024**2
#: Default ``max_padding`` per device type. On a CPU a padded zero column costs as much as
#: a real one, so only layers of equal width share a batch; on a GPU the cost of a small
#: layer is the kernel launches, so wider groups pay.
MAX_PADDING = {"cpu": 1.0, "cuda": 4.0}
#: A layer at least this many times wider than the train split is fit in its row space,
#: when the split has at most ``ROW_SPACE_MAX_SAMPLES`` samples (an n x n eigensolve).
ROW_SPACE_RATIO = 4
ROW_SPACE_MAX_SAMPLES = 4096
#: Row-space directions kept: Gram eigenvalues above this fraction of the largest.
ROW_SPACE_RTOL = 1e-10
#: float64 values of one column slice while forming the Gram matrix (32 MiB).
ROW_SPACE_CHUNK_VALUES = 4 * 1024**2


@dataclass(frozen=True)
class ProbeResult:
    """One layer's fitted probe.

    Attributes
    ----------
    train_accuracy, test_accuracy : fraction of correctly classified samples
        of the train and the test split, in [0, 1].
    train_loss : the minimised objective divided by the number of train
        samples: mean cross-entropy (nats) plus ``0.5 ||W||^2 / (C n_train)``.
    grad_norm : largest absolute entry of the gradient of ``train_loss`` at
        the returned probe (scikit-learn's ``tol`` compares the same number).
    iterations : L-BFGS iterations of the probe's group.
    converged : ``grad_norm <= tol``.
    n_features : features the probe saw (after any capture reduction).
    """

    train_accuracy: float
    test_accuracy: float
    train_loss: float
    grad_norm: float
    iterations: int
    converged: bool
    n_features: int


# --------------------------------------------------------------------------- science


def standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale features with the train split's mean and standard deviation, in place.

    Parameters
    ----------
    train : tensor, shape (n_train, d); test : tensor, shape (n_test, d); both are
        overwritten (no copy of either is made).

    Returns
    -------
    train_z, test_z : ``train`` and ``test``. A feature constant on the train split at
        float32 resolution (:func:`layerlens.resolution.constant_at_resolution`:
        rounding noise included, a narrow range such as [0, 1e-6] excluded) is
        set to 0 in both: it carries no information a probe can fit, and
        dividing by its vanishing std would amplify noise or give NaN.
    """
    constant = torch.from_numpy(constant_at_resolution(
        train.amin(dim=0).cpu().numpy(), train.amax(dim=0).cpu().numpy())).to(train.device)
    mean = train.mean(dim=0)
    train.sub_(mean)
    std = torch.linalg.vector_norm(train, dim=0).div_(len(train) ** 0.5)  # no n x d temporary
    scale = torch.where(constant, torch.ones_like(std), std)
    keep = (~constant).to(train.dtype)
    factor = keep / scale
    return train.mul_(factor), test.sub_(mean).mul_(factor)


def row_space(train: torch.Tensor, test: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The train activations as coordinates in their own row space.

    The probe's weights ``W`` (k, d) start at zero and every gradient,
    ``R^T X / n + reg W``, lies in the row space of the train activations
    ``X``; so ``W = A B`` throughout, with ``B`` (r, d) an orthonormal basis
    of that space, and the logits ``X W^T = Z A^T``, ``||W|| = ||A||``. Fitting
    ``A`` on ``Z = X B^T`` is the same problem (same optimum, same accuracies)
    at width r <= n instead of d. ``B`` comes from the eigenvectors of the
    Gram matrix ``X X^T`` (accumulated in float64 over column slices),
    keeping eigenvalues above ``ROW_SPACE_RTOL`` times the largest.

    Parameters
    ----------
    train : tensor, shape (n, d); test : tensor, shape (m, d).

    Returns
    -------
    z_train (n, r), z_test (m, r), basis (r, d), all in ``train``'s dtype;
    r >= 1 (a zero column when ``train`` is all zeros).
    """
    n, d = train.shape
    step = max(1, ROW_SPACE_CHUNK_VALUES // n)
    columns = [slice(start, start + step) for start in range(0, d, step)]
    gram = train.new_zeros((n, n), dtype=torch.float64)
    for part in columns:  # float64 a slice at a time: never a float64 copy of all of X
        block = train[:, part].double()
        gram.addmm_(block, block.T)
    eigenvalues, vectors = torch.linalg.eigh(gram)
    keep = eigenvalues > ROW_SPACE_RTOL * eigenvalues[-1].clamp(min=0.0)
    if not bool(keep.any()):
        return (train.new_zeros((n, 1)), test.new_zeros((len(test), 1)),
                train.new_zeros((1, d)))
    root = eigenvalues[keep].sqrt()
    scaled = (vectors[:, keep] / root).T  # (r, n)
    basis = torch.cat([(scaled @ train[:, part].double()).to(train.dtype)
                       for part in columns], dim=1)  # (r, d), orthonormal rows
    z_train = (vectors[:, keep] * root).to(train.dtype)
    return z_train, test @ basis.T, basis


def _groups(widths: Sequence[int], column_cost: int, budget: int,
            max_padding: float, extra: Sequence[int] | None = None) -> list[list[int]]:
    """Layer indices grouped by width, widest first, within padding and memory bounds.

    column_cost : float32 values a group holds per (padded) width column and layer.
    extra : bytes each layer holds besides its columns (a row-space basis); default 0.
    """
    extra = [0] * len(widths) if extra is None else extra
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    groups: list[list[int]] = []
    for index in order:
        if groups:
            group = groups[-1]
            widest = widths[group[0]]
            padded = (len(group) + 1) * widest
            real = sum(widths[i] for i in group) + widths[index]
            held = padded * column_cost * 4 + sum(extra[i] for i in group) + extra[index]
            if padded <= max_padding * real and held <= budget:
                group.append(index)
                continue
        groups.append([index])
    return groups


class _Objective:
    """The probe objectives of a group of layers, evaluated together.

    The activations are stored feature-major, ``xt`` of shape (L, d, n):
    with k ~ 10 classes both products per evaluation are skinny GEMMs, and
    in this layout they run about 25% faster on the CPU than with (L, n, d).
    Parameters are flat, shape (L, k * d + k): the weights ``W`` (L, k, d)
    then the intercepts ``b`` (L, k); logits are class-major, (L, k, n).
    For each layer the value is ``mean_i CE(W x_i + b, y_i) + 0.5 * reg *
    ||W||^2`` with ``reg = 1 / (C n)``: scikit-learn's objective divided by ``n``.
    """

    def __init__(self, xt: torch.Tensor, y: torch.Tensor, n_classes: int, c: float) -> None:
        self.xt = xt
        self.y = y
        self.k = n_classes
        self.reg = 1.0 / (c * xt.shape[2])

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers, width = theta.shape[0], self.xt.shape[1]
        return (theta[:, :self.k * width].view(layers, self.k, width),
                theta[:, self.k * width:])

    def logits(self, theta: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """(L, k, n) logits of the samples ``xt`` (L, d, n)."""
        weight, bias = self.split(theta)
        return torch.baddbmm(bias.unsqueeze(2), weight, xt)

    def __call__(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer value (L,) and gradient (L, P) at ``theta``."""
        weight, _ = self.split(theta)
        logits = self.logits(theta, self.xt)
        # log-sum-exp by hand: torch.logsumexp over k ~ 10 classes is many times slower on
        # the CPU, and the exponentials are reused for the probabilities
        top = logits.amax(dim=1, keepdim=True)
        exp = (logits - top).exp_()
        total = exp.sum(dim=1, keepdim=True)
        target = self.y.view(1, 1, -1).expand(len(theta), 1, -1)
        nll = (total.log() + top - logits.gather(1, target)).squeeze(1)
        residual = exp.div_(total).scatter_add_(
            1, target, torch.full_like(total, -1.0)).div_(self.xt.shape[2])
        grad_w = torch.bmm(residual, self.xt.transpose(1, 2)).add_(weight, alpha=self.reg)
        grad = torch.cat([grad_w.flatten(1), residual.sum(dim=2)], dim=1)
        value = nll.mean(dim=1) + 0.5 * self.reg * weight.square().sum(dim=(1, 2))
        return value, grad

    def keep(self, rows: torch.Tensor) -> None:
        self.xt = self.xt[rows]



def fit_linear_probes(
    features: Sequence[np.ndarray],
    y: np.ndarray,
    *,
    train: np.ndarray,
    test: np.ndarray,
    n_classes: int | None = None,
    C: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 1000,
    device: str = "cpu",
    group_bytes: int = DEFAULT_GROUP_BYTES,
    max_padding: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[ProbeResult | None]:
    """Fit one L2-regularised multinomial logistic regression probe per layer, batched.

    Parameters
    ----------
    features : one array per layer, shape (n_samples, d_l), finite values.
    y : ndarray, shape (n_samples,), integer classes ``0..n_classes-1``.
    train, test : ndarray of sample indices of the two splits.
    n_classes : number of classes; default ``y.max() + 1``.
    C : inverse regularisation strength, > 0: the objective is
        ``sum_i CE_i + 0.5 ||W||^2 / C`` (scikit-learn's ``LogisticRegression(C=C)``).
    tol : a layer has converged when every entry of the gradient of its
        objective divided by ``n_train`` is at most ``tol`` in absolute value
        (scikit-learn's ``tol`` for lbfgs).
    max_iter : L-BFGS iterations at most, per layer.
    device : torch device, ``cpu`` or ``cuda``.
    group_bytes : bound on one group's padded train and test activations, solver
        state and row-space bases (float32 bytes); a wider layer is fit alone.
    max_padding : layers share a batch while its padded width times its
        layer count is at most this times their summed widths (>= 1);
        default ``MAX_PADDING`` for the device type.
    progress : ``(step, total, metrics) -> stop?`` with step = layers
        finished of total, called every ``CHUNK_ITERATIONS`` iterations.
        True stops: finished layers keep their result, the others are None.

    Returns
    -------
    list of ProbeResult or None, one per layer in input order.

    References
    ----------
    .. [1] G. Alain and Y. Bengio, arXiv:1610.01644, 2016.
    """
    y = np.asarray(y)
    train, test = np.asarray(train), np.asarray(test)
    _validate(features, y, train, test, C=C, tol=tol, max_iter=max_iter,
              group_bytes=group_bytes)
    if max_padding is not None and not max_padding >= 1.0:
        raise InputError(f"max_padding must be >= 1, got {max_padding}")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if k < int(y.max()) + 1:
        raise InputError(f"n_classes must exceed the largest label {int(y.max())}, got {k}")
    dev = torch.device(device)
    y_train = torch.as_tensor(y[train], dtype=torch.long, device=dev)
    y_test = torch.as_tensor(y[test], dtype=torch.long, device=dev)
    widths = [int(f.shape[1]) for f in features]
    in_row_space = [_fit_in_row_space(len(train), width) for width in widths]
    fit_widths = [min(width, len(train)) if reduce else width
                  for width, reduce in zip(widths, in_row_space, strict=True)]
    results: list[ProbeResult | None] = [None] * len(features)
    finished = 0
    padding = MAX_PADDING.get(dev.type, 1.0) if max_padding is None else max_padding
    # per width column, a group holds the rows and the solver's state (curvature pairs and
    # a few parameter-sized vectors, each k values wide)
    column_cost = len(train) + len(test) + (2 * LBFGS_HISTORY + SOLVER_VECTORS) * k
    # a row-space layer keeps its basis (rank <= n_train, width d) until it is scored
    bases_bytes = [4 * len(train) * width if reduce else 0
                   for width, reduce in zip(widths, in_row_space, strict=True)]
    for members in _groups(fit_widths, column_cost, group_bytes, padding, bases_bytes):
        width = fit_widths[members[0]]
        # feature-major (L, width, n), zero rows past each layer's width; filled one layer
        # at a time, so a group holds its padded rows and one layer's copy
        bases: dict[int, torch.Tensor] = {}
        for slot, i in enumerate(members):
            layer = features[i]  # a memory map of a layer on disk is read here, then dropped
            train_z, test_z = standardize(torch.as_tensor(np.asarray(layer[train]), device=dev),
                                          torch.as_tensor(np.asarray(layer[test]), device=dev))
            del layer
            if in_row_space[i]:
                train_z, test_z, bases[slot] = row_space(train_z, test_z)
            if slot == 0:
                x_train = train_z.new_zeros((len(members), width, len(train)))
                x_test = train_z.new_zeros((len(members), width, len(test)))
            x_train[slot, :train_z.shape[1]] = train_z.T
            x_test[slot, :test_z.shape[1]] = test_z.T
            del train_z, test_z
        objective = _Objective(x_train, y_train, k, C)
        euclidean = torch.tensor([in_row_space[i] for i in members], device=dev)
        solver = BatchedLBFGS(objective, x_train.new_zeros((len(members), k * width + k)),
                              tol=tol, max_iter=max_iter, euclidean=euclidean)
        scorer = _Objective(x_train, y_train, k, C)  # keeps every row for the accuracies
        stop = False
        while solver.active:
            solver.step()
            if solver.iteration % CHUNK_ITERATIONS == 0 or not solver.active:
                stop = _stop(progress, finished + len(solver.finished), len(features),
                             iteration=float(solver.iteration),
                             active_layers=float(solver.active))
                if stop:
                    break
        for row, done in solver.finished.items():
            theta = done.theta.unsqueeze(0)
            train_hit = scorer.logits(theta, x_train[row:row + 1]).argmax(dim=1) == y_train
            test_hit = scorer.logits(theta, x_test[row:row + 1]).argmax(dim=1) == y_test
            grad_norm, converged = done.grad_norm, done.converged
            if row in bases:  # the stopping test's norm was Euclidean: report the entries'
                grad_norm = _gradient_entries_max(
                    _Objective(x_train[row:row + 1], y_train, k, C), theta, bases[row])
                converged = grad_norm <= tol
            results[members[row]] = ProbeResult(
                train_accuracy=float(train_hit.double().mean()),
                test_accuracy=float(test_hit.double().mean()),
                train_loss=done.value, grad_norm=grad_norm, iterations=done.iterations,
                converged=converged, n_features=widths[members[row]])
        finished += len(solver.finished)
        if stop:
            break
    return results


def _fit_in_row_space(n_train: int, width: int) -> bool:
    return width >= ROW_SPACE_RATIO * n_train and n_train <= ROW_SPACE_MAX_SAMPLES


def _gradient_entries_max(objective: _Objective, theta: torch.Tensor,
                          basis: torch.Tensor) -> float:
    """Largest |entry| of a row-space probe's gradient in the layer's own coordinates:
    weights' gradient ``G_A B`` (k, d) and the intercepts' gradient."""
    _, grad = objective(theta)
    grad_a, grad_b = objective.split(grad)
    rank = basis.shape[0]
    grad_w = grad_a[0, :, :rank] @ basis
    return float(torch.maximum(grad_w.abs().max(), grad_b.abs().max()))


def _stop(progress: ProgressCallback | None, step: int, total: int, **metrics: float) -> bool:
    """Call ``progress`` if given; True when it asks to stop."""
    return bool(progress is not None and progress(step, total, metrics))


def _validate(features: Sequence[np.ndarray], y: np.ndarray, train: np.ndarray,
              test: np.ndarray, *, C: float, tol: float, max_iter: int,
              group_bytes: int) -> None:
    if not features:
        raise InputError("features must hold at least one layer")
    n = len(y)
    if y.ndim != 1 or y.dtype.kind not in "iu" or (n and y.min() < 0):
        raise InputError("y must be a 1-D array of non-negative integer classes")
    for i, f in enumerate(features):
        if f.ndim != 2 or f.shape[0] != n:
            raise InputError(f"features[{i}] must have shape (n_samples={n}, d), got {f.shape}")
    for name, split in (("train", train), ("test", test)):
        if split.ndim != 1 or len(split) == 0 or split.min() < 0 or split.max() >= n:
            raise InputError(f"{name} must be a non-empty 1-D array of indices in [0, {n})")
    if not C > 0:
        raise InputError(f"C must be > 0, got {C}")
    if not tol > 0:
        raise InputError(f"tol must be > 0, got {tol}")
    if max_iter < 1:
        raise InputError(f"max_iter must be at least 1, got {max_iter}")
    if group_bytes < 1:
        raise InputError(f"group_bytes must be at least 1, got {group_bytes}")

