"""The batched L-BFGS: problems leave the batch independently, whatever else leaves with them."""

from __future__ import annotations

import torch

from layerlens.analyses.lbfgs import BatchedLBFGS


class _Problems:
    """Row ``i``: a quadratic 0.5 |theta - c_i|^2, honest or reporting its gradient with the
    wrong sign (``lying``: no step ever decreases it, so its line search fails)."""

    def __init__(self, centres: torch.Tensor, lying: torch.Tensor) -> None:
        self.centres, self.lying = centres, lying

    def __call__(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = theta - self.centres
        sign = torch.where(self.lying, -1.0, 1.0).to(theta.dtype)[:, None]
        return 0.5 * residual.square().sum(dim=1), sign * residual

    def keep(self, rows: torch.Tensor) -> None:
        self.centres, self.lying = self.centres[rows], self.lying[rows]


def test_a_problem_that_converges_and_one_that_stalls_in_the_same_step_both_retire():
    """Row 0 reaches its optimum in one step (first step 1 / |g|_1 = 1 lands on c); row 1's
    line search fails in that same step. Both must come back, each with its own verdict."""
    centres = torch.tensor([[0.3, 0.2], [0.5, -0.5], [0.1, 0.1]], dtype=torch.float64)
    lying = torch.tensor([False, True, False])
    solver = BatchedLBFGS(_Problems(centres, lying), torch.zeros(3, 2, dtype=torch.float64),
                          tol=1e-9, max_iter=50)
    solver.step()
    assert solver.active == 0 and sorted(solver.finished) == [0, 1, 2]
    assert solver.finished[0].converged and solver.finished[2].converged
    assert not solver.finished[1].converged and solver.finished[1].iterations == 1
    torch.testing.assert_close(solver.finished[0].theta, centres[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(solver.finished[1].theta, torch.zeros(2, dtype=torch.float64))


def test_every_problem_still_running_at_max_iter_retires_unconverged():
    centres = torch.tensor([[0.3, 0.2], [40.0, -30.0]], dtype=torch.float64)
    solver = BatchedLBFGS(_Problems(centres, torch.tensor([False, False])),
                          torch.zeros(2, 2, dtype=torch.float64), tol=1e-12, max_iter=1)
    solver.step()
    assert solver.active == 0
    assert solver.finished[0].converged and not solver.finished[1].converged
