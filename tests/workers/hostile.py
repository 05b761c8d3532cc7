"""TorchScript models that misbehave, for the sandbox tests (scripted from this file's source)."""

from __future__ import annotations

import torch


class FileReader(torch.nn.Module):
    """Adds the sum of a file's bytes to its input, then a layer: a model that exfiltrates a
    file's content through its activations (``torch.from_file`` is a TorchScript operator)."""

    def __init__(self, path: str, n_bytes: int) -> None:
        super().__init__()
        self.path = path
        self.n_bytes = n_bytes
        self.fc = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(4))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, False, self.n_bytes, dtype=torch.uint8)
        return self.fc(x + data.float().sum())


class MemoryHog(torch.nn.Module):
    """Allocates 400 MB per sample before its layer: fine on one sample, fatal on a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(x.shape[0] * 100_000_000)
        return self.fc(x * big.mean())


class Spinner(torch.nn.Module):
    """Burns CPU: ``steps * batch**3`` matrix products, so a sample or two passes quickly and
    a batch of a hundred never ends (however fast the machine)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.ones(256, 256)
        n = x.shape[0]
        for _ in range(self.steps * n * n * n):
            m = torch.tanh(m @ m)
        return self.fc(x + m.mean())
