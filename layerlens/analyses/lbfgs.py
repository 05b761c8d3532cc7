"""Batched L-BFGS: many independent smooth problems minimised together, each on its own.

The problems share one objective callable evaluated on all of them at once
(one batched product per evaluation on a GPU or a BLAS), but every problem
keeps its own curvature pairs, step length and stopping test, so no
problem's path depends on another's. Used by the linear probes; any batch of
strongly convex problems (the Armijo line search relies on positive
curvature) can use it.

References
----------
Liu, D. C. & Nocedal, J. (1989). On the limited memory BFGS method for large
    scale optimization. Mathematical Programming 45.
Nocedal, J. (1980). Updating quasi-Newton matrices with limited storage.
    Mathematics of Computation 35.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

#: Curvature pairs kept per problem, and its other parameter-sized vectors
#: (parameters, gradient, direction, trial point, previous gradient, scratch).
LBFGS_HISTORY = 10
SOLVER_VECTORS = 6


class BatchedObjective(Protocol):
    """``f(theta)`` for a batch of problems, and how to drop finished ones."""

    def __call__(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta (L, P) -> value (L,) and gradient (L, P), one row per active problem."""

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the problems at ``rows`` (indices into the active ones)."""


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


@dataclass
class Finished:
    """One problem's result: its point, value, stopping norm and iterations."""

    theta: torch.Tensor
    value: float
    grad_norm: float
    iterations: int
    converged: bool


class BatchedLBFGS:
    """L-BFGS run on every problem (a layer's probe, say) of a batch at once, each on its own.

    ``theta`` (L, P) is the starting point; ``finished`` maps each problem's
    index in it to its :class:`Finished` result.

    A backtracking (Armijo) line search suffices because each objective is
    strongly convex, so every step gives a positive curvature pair. A problem
    leaves the batch when its gradient's largest entry is at most ``tol``
    (for rows in ``euclidean``, its Euclidean norm: for a probe fit in its row
    space, that norm bounds every entry of the gradient in the layer's own
    coordinates), when its line search cannot decrease the objective, or at
    ``max_iter``.
    """

    ARMIJO = 1e-4
    MAX_HALVINGS = 20

    def __init__(self, objective: BatchedObjective, theta: torch.Tensor, *, tol: float,
                 max_iter: int, euclidean: torch.Tensor | None = None,
                 history: int = LBFGS_HISTORY) -> None:
        self.f = objective
        layers = theta.shape[0]
        x = theta
        self.ids = torch.arange(layers, device=x.device)
        self.euclidean = (torch.zeros(layers, dtype=torch.bool, device=x.device)
                          if euclidean is None else euclidean)
        self.theta = theta
        self.value, self.grad = self.f(self.theta)
        self.s = x.new_zeros((history, *theta.shape))
        self.y = x.new_zeros((history, *theta.shape))
        self.rho = x.new_zeros((history, layers))
        self.gamma = x.new_ones(layers)
        self.tol, self.max_iter, self.iteration = tol, max_iter, 0
        self.finished: dict[int, Finished] = {}
        self._retire(self._norm() <= tol)

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
        # ONE retirement per step: the masks index the rows active now, so a second call
        # after the first had dropped rows would read the wrong rows (or past the end)
        done = (self._norm() <= self.tol) | pending  # pending: no decrease was found
        if self.iteration >= self.max_iter:
            done = torch.ones_like(done)
        self._retire(done)

    def _retire(self, done: torch.Tensor) -> None:
        """Move the rows of ``done`` (a mask over the active rows) to ``finished``; a row
        has converged when its stopping norm is at most ``tol``."""
        if not bool(done.any()):
            return
        norm = self._norm()
        for row in torch.nonzero(done).flatten().tolist():
            self.finished[int(self.ids[row])] = Finished(
                self.theta[row].clone(), float(self.value[row]), float(norm[row]),
                self.iteration, bool(norm[row] <= self.tol))
        keep = torch.nonzero(~done).flatten()
        self.ids, self.theta = self.ids[keep], self.theta[keep]
        self.value, self.grad = self.value[keep], self.grad[keep]
        self.s, self.y, self.rho = self.s[:, keep], self.y[:, keep], self.rho[:, keep]
        self.gamma, self.euclidean = self.gamma[keep], self.euclidean[keep]
        self.f.keep(keep)
