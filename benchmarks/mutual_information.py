"""Binned I(X;T) and I(T;Y) over every layer: layerlens versus a per-layer numpy loop.

Network: the demo digits CNN (``app.demo.model.digits_cnn``, 11 layers,
8,298 features in all), trained for 3 s (seeded), exported to TorchScript
and captured by layerlens. Data: the 1,797 scikit-learn digits replicated to
N = 10,000 samples with seeded Gaussian pixel jitter (std 1 on the 0..16
scale, clipped), so almost every sample is distinct. Estimator: equal-width
binning, 30 bins over each layer's observed range (``{"estimator": "binning"}``; the
default estimator is kde).

Baseline: for each layer, ``numpy.floor`` binning with the same float32
arithmetic, ``numpy.unique(bins, axis=0)`` to count the binned rows and
``numpy.unique`` on (symbol, label) pairs for H(T,Y); single-threaded, as
numpy is. Candidate: :func:`layerlens.analyses.mutual_information.estimators.binning_information`
on the CPU with torch limited to one thread for the comparison (like for
like); its time with torch's default thread count is printed as well.
Target: candidate at least 10x faster, identical values (symbol counts equal;
the printed max abs difference is float rounding of the entropy sums).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.demo.model import DIGITS_SHAPE, digits_cnn, export_torchscript, train_classifier
from benchmarks.timing import paired_medians
from layerlens.analyses.mutual_information.estimators import binning_information
from layerlens.capture import capture_activations
from layerlens.data import Dataset, resolve_dataset
from layerlens.models import load_model

TARGET = 10.0
N_SAMPLES = 10_000
N_BINS = 30


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def numpy_binning(layers: list[np.ndarray], y: np.ndarray, n_bins: int,
                  ) -> list[tuple[float, float, int]]:
    """The per-layer loop: ``[(I_XT, I_TY, n_symbols)]`` in bits."""
    h_y = _entropy(np.bincount(y))
    out = []
    for values in layers:
        lo, hi = values.min(), values.max()
        scale = np.float32(n_bins / (float(hi) - float(lo))) if hi > lo else np.float32(0.0)
        bins = np.clip(np.floor((values - lo) * scale), 0, n_bins - 1).astype(np.int64)
        _, inverse, counts = np.unique(bins, axis=0, return_inverse=True, return_counts=True)
        pairs = np.stack([inverse.ravel(), y], axis=1)
        joint = np.unique(pairs, axis=0, return_counts=True)[1]
        h_t = _entropy(counts)
        out.append((h_t, h_t + h_y - _entropy(joint), len(counts)))
    return out


def _activations() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    digits = resolve_dataset("builtin:digits")
    images = digits.x.reshape(-1, *DIGITS_SHAPE)
    net = train_classifier(digits_cnn(), images, digits.y, seconds=3.0, max_epochs=10, seed=0)
    rng = np.random.default_rng(0)
    pick = np.resize(np.arange(digits.n_samples), N_SAMPLES)
    x = np.clip(digits.x[pick] + rng.normal(0.0, 1.0, (N_SAMPLES, digits.x.shape[1])), 0, 16)
    data = Dataset.from_arrays("digits-jitter-10k", x.astype(np.float32), digits.y[pick],
                               image_shape=DIGITS_SHAPE)
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(export_torchscript(net, Path(folder) / "cnn.pt"), device="cpu",
                           sample_shapes=data.sample_shapes)
        captured = capture_activations(model, data)
    names = list(captured.layers)
    return [captured.layers[name].values for name in names], captured.y, names


def main() -> None:
    layers, y, names = _activations()
    widths = [values.shape[1] for values in layers]
    print(f"mutual information (binning, {N_BINS} bins, observed range): digits CNN, "
          f"{len(layers)} layers ({sum(widths)} features), N = {len(y)}, CPU, "
          f"{torch.get_num_threads()} threads")
    fast = binning_information(layers, y, n_bins=N_BINS)
    slow = numpy_binning(layers, y, N_BINS)
    diff = max(max(abs(a.i_xt - b[0]), abs(a.i_ty - b[1])) for a, b in zip(fast, slow, strict=True))
    same_counts = all(a.n_symbols == b[2] for a, b in zip(fast, slow, strict=True))
    print(f"{'layer':<12} {'features':>8} {'I(X;T) bits':>12} {'I(T;Y) bits':>12}")
    for name, width, result in zip(names, widths, fast, strict=True):
        print(f"{name:<12} {width:8d} {result.i_xt:12.6f} {result.i_ty:12.6f}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like for like: the numpy loop runs on one core
    try:
        base, cand = paired_medians(lambda: numpy_binning(layers, y, N_BINS),
                                    lambda: binning_information(layers, y, n_bins=N_BINS),
                                    repeats=3, warmup=1)
    finally:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    binning_information(layers, y, n_bins=N_BINS)
    all_threads = time.perf_counter() - start
    ratio = base / cand
    print(f"{'numpy s':>9} {'layerlens s':>12} {'ratio':>6} {'max |diff| bits':>16} "
          f"{'same symbols':>13}  target >= {TARGET:g}x (both on 1 thread)")
    verdict = "ok" if ratio >= TARGET and diff < 1e-12 and same_counts else "MISSED"
    print(f"{base:9.3f} {cand:12.3f} {ratio:6.1f} {diff:16.2e} {same_counts!s:>13}  {verdict}")
    print(f"layerlens with torch's default {threads} threads: {all_threads:.3f} s (one run; "
          "on a loaded machine, threads waiting for each other can make this slower)")


if __name__ == "__main__":
    main()
