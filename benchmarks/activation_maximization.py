"""Activation maximisation: all units of a layer in one batch versus one unit at a time.

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
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from app.demo.model import DIGITS_SHAPE, digits_cnn, export_torchscript, train_classifier
from layerlens.analyses.activation_maximization.parametrization import data_range
from layerlens.analyses.activation_maximization.science import Maximization, maximize_activation
from layerlens.data import resolve_dataset
from layerlens.models import load_model

TARGET = 10.0
STEPS = 128
UNITS = 64
THREADS = 1


def _timed(func: Callable[[], Maximization]) -> tuple[float, Maximization]:
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


def main() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        rows = run()
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


if __name__ == "__main__":
    main()
