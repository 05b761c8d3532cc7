"""Linear probes on every layer: layerlens' batched torch fit vs one scikit-learn fit per layer.

Model: the demo digits CNN (``app.demo.model``), trained for about 3 s
(seeded), all 11 layers captured from its TorchScript export on
``builtin:digits`` (1797 samples, 80/20 stratified split, seed 0).
Baseline: for each layer ``StandardScaler`` on the train split and
``LogisticRegression(solver="lbfgs", C=1.0)``, one layer after another.
Candidate: :func:`layerlens.analyses.linear_probe.science.fit_linear_probes` (same
objective, same gradient tolerance), standardisation included. Both are
timed under the same thread limit (torch and the BLAS/OpenMP pools), once
with one thread and once with this machine's default. The quality figure is
the largest per-layer difference in test accuracy (must be <= 0.01).
Target: baseline / layerlens >= 5.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from app.demo.model import DIGITS_SHAPE, digits_cnn, export_torchscript, train_classifier
from benchmarks.timing import paired_medians
from layerlens.analyses.linear_probe.science import fit_linear_probes
from layerlens.capture import capture_activations
from layerlens.data import resolve_dataset
from layerlens.models import load_model

TARGET = 5.0
MAX_ACCURACY_GAP = 0.01
MAX_ITER = 1000


def _features() -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """All layers of the trained digits CNN: ``(features, y, train, test)``."""
    digits = resolve_dataset("builtin:digits")
    train, test = digits.split(test_fraction=0.2, seed=0)
    images = digits.x.reshape(-1, *DIGITS_SHAPE)
    net = train_classifier(digits_cnn(), images[train], digits.y[train], seconds=3.0,
                           max_epochs=12, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(export_torchscript(net, Path(folder) / "cnn.pt"),
                           sample_shapes=digits.sample_shapes, device="cpu")
        activations = capture_activations(model, digits)
    features = [layer.values for layer in activations.layers.values()]
    return features, digits.y, train, test


def _sklearn(features: list[np.ndarray], y: np.ndarray, train: np.ndarray,
             test: np.ndarray) -> list[float]:
    accuracies = []
    for values in features:
        scaler = StandardScaler().fit(values[train])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = LogisticRegression(solver="lbfgs", C=1.0, max_iter=MAX_ITER)
            probe.fit(scaler.transform(values[train]), y[train])
        accuracies.append(float(probe.score(scaler.transform(values[test]), y[test])))
    return accuracies


def _layerlens(features: list[np.ndarray], y: np.ndarray, train: np.ndarray,
               test: np.ndarray) -> list[float]:
    results = fit_linear_probes(features, y, train=train, test=test, max_iter=MAX_ITER,
                                device="cpu")
    return [result.test_accuracy for result in results if result is not None]


def run(threads: int, data: tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]
        ) -> tuple[float, float, float]:
    """``(sklearn seconds, layerlens seconds, max |test accuracy difference|)``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            baseline = _sklearn(*data)
            candidate = _layerlens(*data)
            base_s, cand_s = paired_medians(lambda: _sklearn(*data), lambda: _layerlens(*data),
                                            repeats=3, warmup=0)
    finally:
        torch.set_num_threads(previous)
    gap = max(abs(a - b) for a, b in zip(baseline, candidate, strict=True))
    return base_s, cand_s, gap


def main() -> None:
    data = _features()
    widths = [f.shape[1] for f in data[0]]
    print(f"linear probes: digits CNN, {len(widths)} layers (widths {widths}), "
          f"{len(data[2])} train / {len(data[3])} test samples, CPU")
    print(f"{'threads':>7} {'sklearn s':>10} {'layerlens s':>12} {'ratio':>6} {'max |dacc|':>11}"
          f"  target >= {TARGET}, |dacc| <= {MAX_ACCURACY_GAP}")
    for threads in sorted({1, torch.get_num_threads()}):
        base_s, cand_s, gap = run(threads, data)
        ratio = base_s / cand_s
        verdict = "ok" if ratio >= TARGET and gap <= MAX_ACCURACY_GAP else "MISSED"
        print(f"{threads:7d} {base_s:10.2f} {cand_s:12.2f} {ratio:6.2f} {gap:11.4f}  {verdict}")


if __name__ == "__main__":
    main()
