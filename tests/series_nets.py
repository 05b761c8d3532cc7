"""The 12-10-7-5-4-3-2 tanh network of Shwartz-Ziv & Tishby on ``builtin:ib12``, trained
briefly with checkpoints saved as ONNX (for the checkpoint-series tests)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from layerlens.data import resolve_dataset

WIDTHS = (12, 10, 7, 5, 4, 3, 2)


def ib_network(seed: int = 0) -> nn.Sequential:
    """Linear+tanh blocks 12-10-7-5-4-3, then a 2-unit linear output (the logits)."""
    torch.manual_seed(seed)
    blocks: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(WIDTHS[:-1]):
        blocks += [nn.Linear(width_in, width_out), nn.Tanh()]
    return nn.Sequential(*blocks, nn.Linear(WIDTHS[-2], WIDTHS[-1]))


def export(model: nn.Module, path: Path) -> Path:
    torch.onnx.export(model, (torch.zeros(2, WIDTHS[0]),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def train_checkpoints(folder: Path, *, epochs: tuple[int, ...] = (0, 20, 80, 300, 1000),
                      lr: float = 0.05, seed: int = 0) -> list[Path]:
    """Full-batch Adam on 80% of ib12 (cross-entropy), an ONNX export at each epoch of
    ``epochs`` as ``epoch_<n>.onnx``; about 2 s of CPU for the defaults."""
    data = resolve_dataset("builtin:ib12")
    rng = np.random.default_rng(seed)
    train = rng.permutation(data.n_samples)[: int(0.8 * data.n_samples)]
    x = torch.as_tensor(data.x[train], dtype=torch.float32)
    y = torch.as_tensor(data.y[train], dtype=torch.long)
    model = ib_network(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    paths = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 12-10-7-5-4-3-2 net: threads only contend (20x slower loaded)
    try:
        for epoch in range(max(epochs) + 1):
            if epoch in epochs:
                paths.append(export(model.eval(), folder / f"epoch_{epoch:04d}.onnx"))
            model.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return paths
