"""The demo: a small digits CNN, trained for seconds, exported to both formats.

Tests and benchmarks reuse :func:`digits_cnn`, :func:`train_classifier` and
the two exporters, so the demo model is the one the suite checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from layerlens.data import resolve_dataset

DIGITS_SHAPE = (1, 8, 8)


def digits_cnn() -> nn.Sequential:
    """A small CNN for 8x8 digits, built from modules only so both formats list the same layers."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, *, seconds: float = 5.0,
                     max_epochs: int = 40, seed: int = 0, lr: float = 1e-3,
                     after_epoch: Callable[[int, nn.Module, bool], None] | None = None
                     ) -> nn.Module:
    """Adam on cross-entropy, full passes over (x, y) until the time or epoch budget ends.

    ``after_epoch(epoch, model, last)`` hears of every finished epoch (1, 2, ...), ``last``
    True for the final one (to save checkpoints)."""
    torch.manual_seed(seed)
    inputs, targets = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    deadline = time.monotonic() + seconds
    model.train()
    for epoch in range(1, max_epochs + 1):
        for batch in torch.randperm(len(inputs), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
        last = time.monotonic() > deadline or epoch == max_epochs
        if after_epoch is not None:
            after_epoch(epoch, model.eval(), last)
            model.train()
        if last:
            break
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x).float()).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def export_onnx(model: nn.Module, path: Path, input_shape: tuple[int, ...]) -> Path:
    """ONNX with a dynamic batch axis (TorchScript-based exporter)."""
    example = torch.zeros((2, *input_shape))
    torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def export_torchscript(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(model), str(path))
    return path


#: Epochs after which the demo saves a checkpoint (and after the last one, and before the first).
CHECKPOINT_EPOCHS = (1, 3)


def train_and_export(out: Path, *, seconds: float = 5.0
                     ) -> tuple[dict[str, Path], list[Path]]:
    """Train the digits CNN for up to ``seconds``; ``{"onnx": path, "torchscript": path}``
    of the trained model, and its ONNX checkpoints ``checkpoints/epoch_<n>.onnx`` (untrained,
    after :data:`CHECKPOINT_EPOCHS` and after the last epoch) for a series."""
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    digits = resolve_dataset("builtin:digits")
    train, test = digits.split(test_fraction=0.2, seed=0)
    images = digits.x.reshape(-1, *DIGITS_SHAPE)
    print(f"training a small CNN on builtin:digits for up to {seconds:.0f} s ...", flush=True)
    torch.manual_seed(0)
    model: nn.Module = digits_cnn()
    checkpoints = [export_onnx(model, folder / "epoch_0.onnx", DIGITS_SHAPE)]

    def save(epoch: int, trained: nn.Module, last: bool) -> None:
        if epoch in CHECKPOINT_EPOCHS or last:
            checkpoints.append(export_onnx(trained, folder / f"epoch_{epoch}.onnx",
                                           DIGITS_SHAPE))

    model = train_classifier(model, images[train], digits.y[train], seconds=seconds,
                             after_epoch=save)
    print(f"held-out accuracy: {accuracy(model, images[test], digits.y[test]):.3f}")
    return ({"onnx": export_onnx(model, out / "digits_cnn.onnx", DIGITS_SHAPE),
             "torchscript": export_torchscript(model, out / "digits_cnn.pt")}, checkpoints)
