"""Activation maximisation: units in one batch versus one at a time; layers together versus
one layer at a time.

Model: the demo digits CNN (trained for two seconds, seeded), TorchScript,
CPU. Layer: its hidden ``Linear(512 -> 64)``, all 64 units, the channel
objective (the unit itself for a flat layer), the Fourier image
parametrisation with 1 px jitter, ``STEPS`` Adam steps. Baseline: a loop
that optimises one unit at a time; candidate: one batch of 64. Both use the
same per-unit seeds, so their mean final activations must agree (the batch
computes the same per-unit optimisation; float rounding differs between
batch sizes, so a unit on a flat or kinked objective may end a little
apart). Target: batched / loop throughput >= 10. Each side is timed once
after a warm-up (the loop takes seconds), on one thread so both get the
same hardware.

Second table, cost against the number of layers: a deep toy CNN (a 3 -> 8 stem and
``DEPTH`` conv(8 -> 8, 3x3)-ReLU blocks, random weights, 3x16x16 inputs, TorchScript),
``LAYER_UNITS`` units of each of 2, 8 and 32 convolutions spread over depth,
``LAYER_STEPS`` steps. Baseline: the per-layer loop activation maximisation ran
before (one optimisation, so one truncated forward per step, per layer);
candidate: every layer's units in one batch (chunked by depth and memory as the
report does, :mod:`layerlens.analyses.activation_maximization.joint`), one forward
per step per chunk. Both use the same per-unit seeds; the table also shows the
largest difference between the two results and the share of units reaching their
maximum over 64 random images.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from app.demo.model import DIGITS_SHAPE, digits_cnn, export_torchscript, train_classifier
from layerlens.analyses.activation_maximization.joint import Target, chunk_targets, joint_score
from layerlens.analyses.activation_maximization.parametrization import data_range
from layerlens.analyses.activation_maximization.plan import spread_over_depth
from layerlens.analyses.activation_maximization.science import (
    Maximization,
    maximize_activation,
    maximize_objectives,
    objective_values,
)
from layerlens.data import resolve_dataset
from layerlens.models import load_model

TARGET = 10.0
STEPS = 128
UNITS = 64
THREADS = 1
DEPTH = 32
LAYER_COUNTS = (2, 8, 32)
LAYER_UNITS = 4
LAYER_STEPS = 32
TOY_SHAPE = (3, 16, 16)
T = TypeVar("T")


def _timed(func: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def run() -> dict[str, tuple[float, float, float]]:
    """``{"loop" | "batched": (seconds, mean final activation, max |unit difference| to loop)}``.
    """
    digits = resolve_dataset("builtin:digits")
    images = digits.x.reshape(-1, *DIGITS_SHAPE)
    net = train_classifier(digits_cnn(), images, digits.y, seconds=2.0, max_epochs=8, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(export_torchscript(net, Path(folder) / "cnn.pt"),
                           input_shape=DIGITS_SHAPE, device="cpu")
    layer = next(layer.name for layer in model.layers if layer.shape == (UNITS,))
    low, high = data_range(digits.x, DIGITS_SHAPE)
    seeds = [1000 + unit for unit in range(UNITS)]

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.capture_torch(x, [layer])[layer]

    def optimise(units: list[int], unit_seeds: list[int], steps: int = STEPS) -> Maximization:
        return maximize_activation(forward, input_shape=DIGITS_SHAPE, units=units,
                                   seeds=unit_seeds, low=low, high=high, steps=steps,
                                   device="cpu")

    def loop() -> Maximization:
        parts = [optimise([unit], [seed]) for unit, seed in zip(range(UNITS), seeds,
                                                                 strict=True)]
        return Maximization(np.concatenate([p.inputs for p in parts]),
                            np.concatenate([p.activations for p in parts]), STEPS, False)

    optimise([0], [0], steps=16)  # warm-up: TorchScript specialises its graph on first calls
    optimise(list(range(UNITS)), seeds, steps=16)
    loop_seconds, looped = _timed(loop)
    batch_seconds, batched = _timed(lambda: optimise(list(range(UNITS)), seeds))
    differs = float(np.abs(batched.activations - looped.activations).max())
    return {"loop": (loop_seconds, float(looped.activations.mean()), 0.0),
            "batched": (batch_seconds, float(batched.activations.mean()), differs)}


def _deep_cnn(folder: Path) -> Path:
    torch.manual_seed(0)
    blocks: list[torch.nn.Module] = [torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()]
    for _ in range(DEPTH):
        blocks += [torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()]
    path = folder / "deep.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(*blocks).eval()), str(path))
    return path


def run_layers() -> dict[int, tuple[float, float, float, float, int]]:
    """``{n_layers: (loop seconds, joint seconds, max |activation diff|, share reaching the
    dataset max (joint), chunks)}``."""
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(_deep_cnn(Path(folder)), input_shape=TOY_SHAPE, device="cpu")
    convs = [i for i, layer in enumerate(model.layers) if layer.op == "Conv2d"][1:]
    depth_cost = np.cumsum([layer.n_features for layer in model.layers], dtype=np.float64)
    images = np.random.default_rng(0).uniform(0, 1, (64, *TOY_SHAPE)).astype(np.float32)
    low, high = data_range(images, TOY_SHAPE)
    with torch.no_grad():
        data = model.capture_torch(torch.from_numpy(images), model.layer_names)
    options: dict[str, Any] = dict(input_shape=TOY_SHAPE, low=low, high=high,
                                   steps=LAYER_STEPS, device="cpu")
    rows = {}
    for count in LAYER_COUNTS:
        chosen = [convs[i] for i in spread_over_depth(len(convs), count)]
        targets = [Target(model.layer_names[i], u, 100 * i + u) for i in chosen
                   for u in range(LAYER_UNITS)]

        def loop(chosen: list[int] = chosen) -> np.ndarray:
            values = []
            for i in chosen:
                def forward(x: torch.Tensor, name: str = model.layer_names[i]) -> torch.Tensor:
                    return model.capture_torch(x, [name])[name]

                result = maximize_activation(
                    forward, units=list(range(LAYER_UNITS)),
                    seeds=[100 * i + u for u in range(LAYER_UNITS)], **options)
                values.append(result.activations)
            return np.concatenate(values)

        def joint(targets: list[Target] = targets) -> tuple[np.ndarray, int]:
            chunks = chunk_targets([float(depth_cost[model.layer_names.index(t.layer)])
                                    for t in targets])
            values = [maximize_objectives(joint_score(model.capture_torch, batch, "channel"),
                                          seeds=[t.seed for t in batch], **options).activations
                      for batch in ([targets[i] for i in chunk] for chunk in chunks)]
            return np.concatenate(values), len(chunks)

        loop_seconds, looped = _timed(loop)
        joint_seconds, (joined, chunks) = _timed(joint)
        best = np.array([float(objective_values(data[t.layer], "channel")[:, t.unit].max())
                         for t in targets])
        rows[count] = (loop_seconds, joint_seconds, float(np.abs(joined - looped).max()),
                       float(np.mean(joined >= best)), chunks)
    return rows


def main() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        rows = run()
        layer_rows = run_layers()
    finally:
        torch.set_num_threads(previous)
    print(f"activation maximisation: digits CNN hidden Linear, {UNITS} units, {STEPS} steps, "
          f"TorchScript, CPU, {THREADS} thread")
    print(f"{'mode':<8} {'seconds':>8} {'units/s':>8} {'mean activation':>16} "
          f"{'max |diff| vs loop':>19}")
    for mode in ("loop", "batched"):
        seconds, mean, differs = rows[mode]
        print(f"{mode:<8} {seconds:8.2f} {UNITS / seconds:8.2f} {mean:16.4f} {differs:19.2e}")
    ratio = rows["loop"][0] / rows["batched"][0]
    verdict = "ok" if ratio >= TARGET else "MISSED"
    print(f"batched / loop throughput: {ratio:.1f}x  target >= {TARGET:.0f}x  {verdict}")
    print()
    print(f"activation maximisation by number of layers: toy CNN of {DEPTH} conv(8 -> 8) "
          f"blocks, {TOY_SHAPE[1]}x{TOY_SHAPE[2]}, {LAYER_UNITS} units per layer, "
          f"{LAYER_STEPS} steps, TorchScript, CPU, {THREADS} thread")
    print(f"{'layers':>6} {'per-layer loop s':>17} {'joint s':>8} {'chunks':>6} "
          f"{'loop / joint':>12} {'max |diff|':>10} {'>= data max':>11}")
    for count, (loop_s, joint_s, differs, reached, chunks) in layer_rows.items():
        print(f"{count:>6} {loop_s:17.2f} {joint_s:8.2f} {chunks:>6} {loop_s / joint_s:11.1f}x "
              f"{differs:10.1e} {reached:11.0%}")


def resnet50(samples: int = 500, device: str = "cpu") -> None:
    """By hand, not in the suite (minutes): ``python -m benchmarks.activation_maximization
    resnet50 [SAMPLES] [DEVICE]``. ResNet-50 (transformers ``ResNetConfig()``, random weights,
    224x224, TorchScript) on random images: capture, then the default activation
    maximisation, timed, with its plan and the units reaching their dataset maximum."""
    from transformers import ResNetConfig, ResNetForImageClassification

    from layerlens.analyses.activation_maximization.run import run as run_section
    from layerlens.analyses.activation_maximization.spec import ActivationMaximizationSpec
    from layerlens.analyses.base import AnalysisContext, ArtifactWriter
    from layerlens.capture import capture_activations
    from layerlens.data import Dataset

    class Logits(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0]

    torch.manual_seed(0)
    net = ResNetForImageClassification(ResNetConfig(return_dict=False)).eval()
    shape = (3, 224, 224)
    x = np.random.default_rng(0).uniform(0, 1, (samples, *shape)).astype(np.float32)
    data = Dataset.from_arrays("bench:random", x, np.arange(samples) % 10)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet50.pt"
        torch.jit.save(torch.jit.trace(Logits(net), torch.zeros(1, *shape)), str(path))
        model = load_model(path, input_shape=shape, device=device)
        start = time.perf_counter()
        activations = capture_activations(model, data)
        captured = time.perf_counter()
        ctx = AnalysisContext(model, data, activations, ArtifactWriter(Path(folder)),
                              device=device)
        section = run_section(ActivationMaximizationSpec(kind="activation_maximization"), ctx)
        done = time.perf_counter()
    units = [u for entry in section.layers for u in getattr(entry, "units", [])]
    reached = sum(u.activation >= u.dataset_max_activation for u in units)
    print(f"ResNet-50, {samples} samples, {device}, {torch.get_num_threads()} threads: capture "
          f"{captured - start:.0f} s, activation maximisation {done - captured:.0f} s; "
          f"{reached}/{len(units)} units reach their dataset maximum")
    print(section.plan.model_dump_json(indent=1))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["resnet50"]:
        extra = sys.argv[2:]
        resnet50(int(extra[0]) if extra else 500, extra[1] if len(extra) > 1 else "cpu")
    else:
        main()
