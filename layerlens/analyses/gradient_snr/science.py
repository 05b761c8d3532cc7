"""Gradient signal-to-noise ratio of each weighted layer over mini-batches.

For mini-batch b, ``g_b = dL_b/dW`` is the gradient of the mean cross-entropy loss of
the batch with respect to a layer's weights W (weights and biases flattened into one
vector of P numbers). Over B mini-batches:

- ``snr = ||mean_b g_b|| / ||std_b g_b||``, the standard deviation taken element-wise
  (Shwartz-Ziv & Tishby 2017, Fig. 4);
- ``snr_norms = mean_b ||g_b|| / std_b ||g_b||``, the ratio of the gradient norm's mean
  to its standard deviation.

Standard deviations are population ones (divided by B, numpy's ``ddof=0``). Moments are
accumulated batch by batch in float64 (Welford), so memory holds three vectors per layer
whatever B is.

References
----------
R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural networks via
information", arXiv:1703.00810, 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from layerlens.errors import GradientUnavailableError, InputError

#: ``forward(x) -> log-probabilities (B, n_classes)``, differentiable in the weights.
LogProbabilities = Callable[[torch.Tensor], torch.Tensor]
#: Output operators whose values are probabilities or log-probabilities, not logits.
SOFTMAX_OPS = {"Softmax": "probabilities", "LogSoftmax": "log_probabilities"}


@dataclass
class Moments:
    """Running moments of one layer's gradient over mini-batches (float64)."""

    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None
    norms: list[float] = field(default_factory=list)

    def add(self, gradient: torch.Tensor) -> None:
        """Fold in one mini-batch's gradient, shape (P,)."""
        g = gradient.detach().double()
        self.count += 1
        self.norms.append(float(torch.linalg.vector_norm(g)))
        if self.mean is None or self.m2 is None:
            self.mean, self.m2 = g.clone(), torch.zeros_like(g)
            return
        delta = g - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (g - self.mean)

    def ratios(self) -> tuple[float | None, float | None]:
        """``(snr, snr_norms)``; None where the standard deviation is 0."""
        if self.mean is None or self.m2 is None or self.count < 2:
            raise ValueError("the SNR needs the gradients of at least two mini-batches")
        spread = float(torch.sqrt(torch.sum(self.m2 / self.count)))
        norms = np.asarray(self.norms)
        return (_ratio(float(torch.linalg.vector_norm(self.mean)), spread),
                _ratio(float(norms.mean()), float(norms.std())))


def _ratio(signal: float, noise: float) -> float | None:
    return signal / noise if noise > 0 else None


def log_probabilities(output: torch.Tensor, op: str) -> torch.Tensor:
    """The output ``(B, n_classes)`` as log-probabilities: log-softmax of logits, the log of
    a Softmax output, a LogSoftmax output as it is."""
    kind = SOFTMAX_OPS.get(op)
    if kind == "log_probabilities":
        return output
    if kind == "probabilities":
        return torch.log(output.clamp_min(torch.finfo(output.dtype).tiny))
    return torch.log_softmax(output, dim=1)


def draw_batches(n_samples: int, batch_size: int, n_batches: int, *,
                 seed: int = 0) -> np.ndarray:
    """Row indices of the mini-batches, shape (n_batches, batch_size): consecutive slices of
    seeded permutations of the samples (no sample twice in a batch; every sample once
    before any sample twice)."""
    if not 1 <= batch_size <= n_samples:
        raise InputError(f"batch_size must be between 1 and the {n_samples} samples analysed, "
                         f"got {batch_size}", options=("batch_size",))
    rng = np.random.default_rng(seed)
    per_pass = n_samples // batch_size
    passes = -(-n_batches // per_pass)
    rows = [rng.permutation(n_samples)[:per_pass * batch_size] for _ in range(passes)]
    return np.concatenate(rows).reshape(-1, batch_size)[:n_batches]


@contextmanager
def requiring_grad(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Turn on ``requires_grad`` of the model's weight tensors for the block, then off."""
    before = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(True)
        yield
    finally:
        for t, flag in zip(tensors, before, strict=True):
            t.requires_grad_(flag)


#: One mini-batch as chunks ``(x, y)`` run one after the other (to bound memory).
MiniBatch = Sequence[tuple[torch.Tensor, torch.Tensor]]


def gradient_moments(forward: LogProbabilities, weights: Mapping[str, Sequence[torch.Tensor]],
                     batches: Iterator[MiniBatch], *,
                     progress: Callable[[int], bool] | None = None,
                     ) -> tuple[dict[str, Moments], dict[str, str]]:
    """Accumulate each layer's loss gradient over the mini-batches.

    Parameters
    ----------
    forward : maps a batch of inputs to log-probabilities (B, n_classes), differentiably
        in the weight tensors.
    weights : layer name -> the tensors of its weights (leaves the forward pass reads).
    batches : per mini-batch, its chunks ``(x, y)``, ``y`` int64 class indices; the
        mini-batch's loss is the mean over all its rows, its gradient the sum of the chunks'.
    progress : called with the number of batches done; True stops.

    Returns
    -------
    moments : layer name -> :class:`Moments`, for layers the loss depends on.
    unused : layer name -> why it has no gradient (the loss does not reach it).

    Raises
    ------
    GradientUnavailableError
        When the loss does not depend differentiably on any weight.
    """
    names = list(weights)
    flat = [t for name in names for t in weights[name]]
    moments = {name: Moments() for name in names}
    unused: dict[str, str] = {}
    with requiring_grad(flat):
        for done, chunks in enumerate(batches, start=1):
            rows = sum(len(y) for _, y in chunks)
            total: list[torch.Tensor | None] = [None] * len(flat)
            for x, y in chunks:
                loss = torch.nn.functional.nll_loss(forward(x), y, reduction="sum") / rows
                if not loss.requires_grad:
                    raise GradientUnavailableError("the loss does not depend differentiably "
                                                   "on the model's weights")
                grads = torch.autograd.grad(loss, flat, allow_unused=True)
                total = [g if t is None else t if g is None else t + g
                         for t, g in zip(total, grads, strict=True)]
            parts = iter(total)
            for name in names:
                layer = [next(parts) for _ in weights[name]]
                if any(g is None for g in layer):
                    unused[name] = "the loss does not depend on this layer's weights"
                    continue
                moments[name].add(torch.cat([g.reshape(-1) for g in layer if g is not None]))
            if progress is not None and progress(done):
                break
    return {n: m for n, m in moments.items() if n not in unused}, unused
