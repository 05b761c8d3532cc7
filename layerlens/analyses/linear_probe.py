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
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from layerlens.analyses.base import AnalysisContext, skipped
from layerlens.capture import LayerActivations, ProgressCallback
from layerlens.errors import InputError
from layerlens.report.plots import plt
from layerlens.spec import LinearProbeSpec

#: L-BFGS iterations between two progress reports (and convergence checks).
CHUNK_ITERATIONS = 25
#: Default bound on one group's standardised activations held on the device.
DEFAULT_GROUP_BYTES = 512 * 1024**2
#: Curvature pairs the batched L-BFGS keeps, and its other parameter-sized vectors
#: (parameters, gradient, direction, trial point, previous gradient, scratch).
LBFGS_HISTORY = 10
SOLVER_VECTORS = 6
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
    """Centre and scale features with the train split's mean and standard deviation.

    Parameters
    ----------
    train : tensor, shape (n_train, d); test : tensor, shape (n_test, d).

    Returns
    -------
    train_z, test_z : same shapes. A feature constant on the train split
        (std at most ``1e-6 (1 + |mean|)``, float32 noise included) is set to
        0 in both: it carries no information a probe can fit, and dividing by
        its vanishing std would amplify noise or give NaN.
    """
    mean = train.mean(dim=0)
    std = (train - mean).square_().mean(dim=0).sqrt_()  # torch.std is ~5x slower on the CPU
    constant = std <= 1e-6 * (1.0 + mean.abs())
    scale = torch.where(constant, torch.ones_like(std), std)
    keep = (~constant).to(train.dtype)
    return (train - mean) / scale * keep, (test - mean) / scale * keep


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
            max_padding: float) -> list[list[int]]:
    """Layer indices grouped by width, widest first, within padding and memory bounds.

    column_cost : float32 values a group holds per (padded) width column and layer.
    """
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    groups: list[list[int]] = []
    for index in order:
        if groups:
            group = groups[-1]
            widest = widths[group[0]]
            padded = (len(group) + 1) * widest
            real = sum(widths[i] for i in group) + widths[index]
            if padded <= max_padding * real and padded * column_cost * 4 <= budget:
                group.append(index)
                continue
        groups.append([index])
    return groups


def _pad_transposed(blocks: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Stack (n, d_l) blocks feature-major into (L, width, n), zero rows past each d_l."""
    out = blocks[0].new_zeros((len(blocks), width, blocks[0].shape[0]))
    for slot, block in enumerate(blocks):
        out[slot, :block.shape[1]] = block.T
    return out


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


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


@dataclass
class _Finished:
    theta: torch.Tensor
    value: float
    grad_norm: float
    iterations: int
    converged: bool


class _BatchedLBFGS:
    """L-BFGS run on every layer of a group at once, each layer on its own.

    Every layer keeps its own curvature pairs, step length and stopping
    test: the objectives are evaluated together (one batched product per
    evaluation), but no layer's path depends on another's. A backtracking
    (Armijo) line search suffices because each objective is strongly convex
    in the weights, so every step gives a positive curvature pair. A layer
    leaves the batch when its gradient's largest entry is at most ``tol``
    (for rows in ``euclidean``, its Euclidean norm: the test for a layer fit
    in its row space, whose norm bounds every entry of the gradient in the
    layer's own coordinates), when its line search cannot decrease the
    objective, or at ``max_iter``.
    """

    ARMIJO = 1e-4
    MAX_HALVINGS = 20

    def __init__(self, objective: _Objective, n_params: int, *, tol: float, max_iter: int,
                 euclidean: torch.Tensor, history: int = LBFGS_HISTORY) -> None:
        self.f = objective
        layers = objective.xt.shape[0]
        x = objective.xt
        self.ids = torch.arange(layers, device=x.device)
        self.euclidean = euclidean
        self.theta = x.new_zeros((layers, n_params))
        self.value, self.grad = self.f(self.theta)
        self.s = x.new_zeros((history, layers, n_params))
        self.y = x.new_zeros((history, layers, n_params))
        self.rho = x.new_zeros((history, layers))
        self.gamma = x.new_ones(layers)
        self.tol, self.max_iter, self.iteration = tol, max_iter, 0
        self.finished: dict[int, _Finished] = {}
        self._retire(self._norm() <= tol, converged=True)

    @property
    def active(self) -> int:
        return len(self.ids)

    def _norm(self) -> torch.Tensor:
        """(L,) the stopping test's gradient norm: largest entry, or Euclidean."""
        return torch.where(self.euclidean, torch.linalg.vector_norm(self.grad, dim=1),
                           self.grad.abs().amax(dim=1))

    def _direction(self) -> torch.Tensor:
        """``-H g`` by the two-loop recursion over the stored pairs (Nocedal 1980)."""
        q = self.grad.clone()
        m = len(self.rho)
        slots = [(self.iteration - 1 - j) % m for j in range(min(self.iteration, m))]
        alphas = []
        for slot in slots:  # newest first
            alpha = self.rho[slot] * _rowdot(self.s[slot], q)
            q.addcmul_(self.y[slot], alpha[:, None], value=-1.0)
            alphas.append(alpha)
        q.mul_(self.gamma[:, None])
        for slot, alpha in zip(reversed(slots), reversed(alphas), strict=True):
            beta = self.rho[slot] * _rowdot(self.y[slot], q)
            q.addcmul_(self.s[slot], (alpha - beta)[:, None])
        return q.neg_()

    def step(self) -> None:
        """One iteration for every active layer."""
        direction = self._direction()
        slope = _rowdot(self.grad, direction)
        bad = slope >= 0  # rounding broke the quasi-Newton direction: restart with -grad
        if bool(bad.any()):
            direction[bad] = -self.grad[bad]
            slope = torch.where(bad, -_rowdot(self.grad, self.grad), slope)
            self.rho[:, bad] = 0.0
            self.gamma[bad] = 1.0
        step = torch.ones_like(slope)
        if self.iteration == 0:
            step = torch.clamp(1.0 / self.grad.abs().sum(dim=1), max=1.0)
        pending = torch.ones_like(slope, dtype=torch.bool)
        new_theta, new_value, new_grad = self.theta, self.value, self.grad
        for _ in range(self.MAX_HALVINGS):
            trial = self.theta + step[:, None] * direction
            value, grad = self.f(trial)
            ok = pending & (value <= self.value + self.ARMIJO * step * slope)
            new_theta = torch.where(ok[:, None], trial, new_theta)
            new_grad = torch.where(ok[:, None], grad, new_grad)
            new_value = torch.where(ok, value, new_value)
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        s, y = new_theta - self.theta, new_grad - self.grad
        curvature = _rowdot(s, y)
        valid = ~pending & (curvature > 1e-10 * _rowdot(s, s).clamp(min=1e-30))
        slot = self.iteration % len(self.rho)
        self.s[slot], self.y[slot] = s, y
        self.rho[slot] = torch.where(valid, 1.0 / curvature.clamp(min=1e-30),
                                     torch.zeros_like(curvature))
        self.gamma = torch.where(valid, curvature / _rowdot(y, y).clamp(min=1e-30), self.gamma)
        self.theta, self.value, self.grad = new_theta, new_value, new_grad
        self.iteration += 1
        self._retire(self._norm() <= self.tol, converged=True)
        self._retire(pending, converged=False)  # the line search found no decrease
        if self.iteration >= self.max_iter:
            self._retire(torch.ones_like(pending), converged=False)

    def _retire(self, done: torch.Tensor, *, converged: bool) -> None:
        if not bool(done.any()):
            return
        norm = self._norm()
        for row in torch.nonzero(done).flatten().tolist():
            self.finished[int(self.ids[row])] = _Finished(
                self.theta[row].clone(), float(self.value[row]), float(norm[row]),
                self.iteration, converged and bool(norm[row] <= self.tol))
        keep = torch.nonzero(~done).flatten()
        self.ids, self.theta = self.ids[keep], self.theta[keep]
        self.value, self.grad = self.value[keep], self.grad[keep]
        self.s, self.y, self.rho = self.s[:, keep], self.y[:, keep], self.rho[:, keep]
        self.gamma, self.euclidean = self.gamma[keep], self.euclidean[keep]
        self.f.keep(keep)


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
    group_bytes : bound on one group's padded train and test activations
        (float32 bytes); a wider layer is fit alone.
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
    for members in _groups(fit_widths, column_cost, group_bytes, padding):
        blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
        bases: dict[int, torch.Tensor] = {}
        for slot, i in enumerate(members):
            train_z, test_z = standardize(torch.as_tensor(features[i][train], device=dev),
                                          torch.as_tensor(features[i][test], device=dev))
            if in_row_space[i]:
                train_z, test_z, bases[slot] = row_space(train_z, test_z)
            blocks.append((train_z, test_z))
        width = fit_widths[members[0]]
        x_train = _pad_transposed([b[0] for b in blocks], width)
        x_test = _pad_transposed([b[1] for b in blocks], width)
        del blocks
        objective = _Objective(x_train, y_train, k, C)
        euclidean = torch.tensor([in_row_space[i] for i in members], device=dev)
        solver = _BatchedLBFGS(objective, k * width + k, tol=tol, max_iter=max_iter,
                               euclidean=euclidean)
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


# --------------------------------------------------------------------------- report


class ProbeLayer(BaseModel):
    """One probed layer in the report section."""

    model_config = ConfigDict(extra="forbid")
    layer: str
    train_accuracy: float = Field(ge=0.0, le=1.0)
    test_accuracy: float = Field(ge=0.0, le=1.0)
    train_loss: float = Field(description="objective / n_train: mean cross-entropy (nats) + L2")
    grad_norm: float = Field(ge=0.0, description="largest |gradient entry| at the probe")
    iterations: int = Field(ge=0)
    converged: bool
    n_features: int = Field(ge=1)
    reduction: Literal["spatial_mean", "random_projection"] | None = None


class SkippedLayer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: str
    skipped: str


class LinearProbeSection(BaseModel):
    """``analyses.linear_probe`` of report.json."""

    model_config = ConfigDict(extra="forbid")
    layers: list[ProbeLayer | SkippedLayer]
    image: str | None
    test_fraction: float
    seed: int
    C: float
    n_train: int
    n_test: int
    chance_accuracy: float = Field(description="majority class share of the test split")


def _figure(names: Sequence[str], rows: Sequence[dict[str, Any]], chance: float) -> Any:
    """Train and test accuracy against depth, with chance level."""
    position = {name: i for i, name in enumerate(names)}
    probed = [row for row in rows if "test_accuracy" in row]
    depth = [position[row["layer"]] for row in probed]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5),
                           constrained_layout=True)
    ax.plot(depth, [row["train_accuracy"] for row in probed], "o-", label="train split")
    ax.plot(depth, [row["test_accuracy"] for row in probed], "s-", label="test split")
    ax.axhline(chance, color="grey", linestyle="--",
               label=f"chance (majority class, {chance:.2f})")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("probe accuracy (fraction correct)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Linear probe accuracy by layer")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def run(spec: LinearProbeSpec, ctx: AnalysisContext) -> dict[str, Any]:
    """The ``analyses.linear_probe`` report section: one probe per selected layer."""
    dataset = ctx.dataset
    if ctx.activations.n_samples < dataset.n_samples:  # capture was stopped early
        n = ctx.activations.n_samples
        dataset = replace(dataset, x=dataset.x[:n], y=dataset.y[:n])
    try:
        train, test = dataset.split(test_fraction=spec.test_fraction, seed=spec.seed)
    except ValueError as exc:
        raise InputError(f"linear_probe.test_fraction={spec.test_fraction} cannot split "
                         f"{dataset.n_samples} samples: {exc}") from exc
    chosen: list[LayerActivations] = ctx.layers(spec.layers)
    usable = [layer for layer in chosen if np.isfinite(layer.values).all()]
    results = fit_linear_probes(
        [layer.values for layer in usable], dataset.y, train=train, test=test,
        n_classes=dataset.n_classes, device=ctx.device,
        progress=lambda step, total, metrics: ctx.report_progress(step, total, **metrics),
    ) if usable else []
    by_name = dict(zip([layer.info.name for layer in usable], results, strict=True))
    rows: list[dict[str, Any]] = []
    for layer in chosen:
        name = layer.info.name
        if name not in by_name:
            rows.append(skipped(name, "activations contain NaN or infinite values"))
            continue
        result = by_name[name]
        if result is None:
            rows.append(skipped(name, "stopped before this layer's probe was fit"))
            continue
        rows.append({"layer": name, **result.__dict__,
                     "reduction": None if layer.reduction is None else layer.reduction.method})
    chance = float(np.bincount(dataset.y[test], minlength=dataset.n_classes).max() / len(test))
    names = [layer.info.name for layer in chosen]
    image = None
    if any("test_accuracy" in row for row in rows):
        image = ctx.artifacts.png(_figure(names, rows, chance), "linear_probe", "accuracy")
    section = {"layers": rows, "image": image, "test_fraction": float(spec.test_fraction),
               "seed": int(spec.seed), "C": 1.0, "n_train": len(train),
               "n_test": len(test), "chance_accuracy": chance}
    return LinearProbeSection.model_validate(section).model_dump()
