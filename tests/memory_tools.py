"""Peak memory of a process tree, and a deep CNN to measure it on (tests and benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Seconds between two reads of /proc.
POLL_S = 0.02


@dataclass(frozen=True)
class TreePeak:
    """``rss``: peak of the summed resident set of the tree over the polls (bytes);
    ``bound``: the sum of every process's own peak (``VmHWM``, the last one from ``wait4``),
    which no instant of the tree exceeds; ``returncode``; ``stderr``."""

    rss: int
    bound: int
    returncode: int
    stderr: str


def _status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return fields


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found += [int(child) for child in children]
        frontier += [int(child) for child in children]
    return found


def tree_peak(command: Sequence[str], *, env: dict[str, str] | None = None) -> TreePeak:
    """Run ``command`` and measure the peak memory of it and every process it starts."""
    process = subprocess.Popen(list(command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env)
    peak_rss, hwm, maxrss, status = 0, {}, 0, None
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    stderr = b""
    while status is None:
        pids = [process.pid, *_descendants(process.pid)]
        total = 0
        for pid in pids:
            fields = _status(pid)
            total += fields.get("VmRSS", 0)
            hwm[pid] = max(hwm.get(pid, 0), fields.get("VmHWM", 0))
        peak_rss = max(peak_rss, total)
        stderr += process.stderr.read() or b""
        pid, code, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:  # ru_maxrss: the largest of the command and the descendants it waited for
            status, maxrss = os.waitstatus_to_exitcode(code), usage.ru_maxrss * 1024
        else:
            time.sleep(POLL_S)
    process.returncode = status
    stderr += process.stderr.read() or b""
    process.stderr.close()
    largest = max(hwm, key=lambda pid: hwm[pid])
    hwm[largest] = max(hwm[largest], maxrss)
    return TreePeak(peak_rss, sum(hwm.values()), status, stderr.decode("utf-8", "replace"))


class DeepCNN(nn.Module):
    """A plain residual CNN of ``stages`` x ``blocks`` blocks (conv-relu-conv-add-relu: five
    ONNX layers each), ``width`` channels doubling per stage, stride-2 transitions."""

    def __init__(self, in_channels: int = 3, width: int = 16, stages: int = 3, blocks: int = 20,
                 n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1), nn.ReLU())
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        channels = width
        for stage in range(stages):
            if stage:
                self.transitions.append(nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, 2, 1),
                                                      nn.ReLU()))
                channels *= 2
            self.stages.append(nn.ModuleList(
                nn.ModuleList([nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
                               nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU()])
                for _ in range(blocks)))
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index, stage in enumerate(self.stages):
            if index:
                x = self.transitions[index - 1](x)
            for conv_a, relu_a, conv_b, relu_b in stage:
                x = relu_b(conv_b(relu_a(conv_a(x))) + x)
        return self.head(x.mean(dim=(2, 3)))


def export_cnn(path: Path, input_shape: tuple[int, ...], **shape: int) -> Path:
    """Export a seeded :class:`DeepCNN` to ONNX with a dynamic batch axis."""
    torch.manual_seed(0)
    net = DeepCNN(in_channels=input_shape[0], **shape).eval()
    torch.onnx.export(net, (torch.zeros(2, *input_shape),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return path


def write_dataset(path: Path, n: int, input_shape: tuple[int, ...], n_classes: int = 10) -> Path:
    """Seeded images whose mean brightness encodes the label, as an ``.npz``."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % n_classes
    x = rng.standard_normal((n, *input_shape)).astype(np.float32)
    x += (y / n_classes).astype(np.float32).reshape(-1, *([1] * len(input_shape)))
    np.savez(path, x=x, y=y)
    return path


def analyze_command(model: Path, dataset: Path, out: Path, *options: str) -> list[str]:
    """``layerlens analyze`` as a user runs it (the engine runs in a child process)."""
    return [sys.executable, "-m", "app", "analyze", str(model), "--dataset", str(dataset),
            "--out", str(out), *options]
