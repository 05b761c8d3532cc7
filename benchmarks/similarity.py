"""CKA over all layer pairs: layerlens' batched Grams vs a per-pair numpy loop.

Model: the demo digits CNN (``app.demo.model``), trained for about 3 s
(seeded), all 11 layers captured from its TorchScript export on
``builtin:digits``, the first 1000 samples (the analysis's default
``max_samples``). Baseline: the reference code of Kornblith et al. (2019,
their published notebook: ``gram_linear``, ``center_gram``, ``cka``) called
once per pair of layers, each pair once (i <= j, 66 pairs), in numpy float64.
Candidate: :func:`layerlens.analyses.similarity.science.cka_matrix` (each
Gram once, accumulated over column slices, one product of the stacked
Grams), the full 11 x 11 matrix. Both on the CPU under the same thread limit,
once with one thread and once with this machine's default, for the biased and
the debiased estimator. The quality figure is the largest difference between
the two matrices (must be <= 1e-8).
Target: baseline / layerlens >= 5.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from app.demo.model import DIGITS_SHAPE, digits_cnn, export_torchscript, train_classifier
from benchmarks.timing import paired_medians
from layerlens.analyses.similarity.science import cka_matrix
from layerlens.analyses.similarity.spec import DEFAULT_MAX_SAMPLES
from layerlens.capture import capture_activations
from layerlens.data import resolve_dataset
from layerlens.models import load_model

TARGET = 5.0
MAX_DIFFERENCE = 1e-8


def _features() -> list[np.ndarray]:
    """All layers of the trained digits CNN on the first :data:`DEFAULT_MAX_SAMPLES` samples."""
    digits = resolve_dataset("builtin:digits")
    images = digits.x.reshape(-1, *DIGITS_SHAPE)
    net = train_classifier(digits_cnn(), images, digits.y, seconds=3.0, max_epochs=12, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(export_torchscript(net, Path(folder) / "cnn.pt"),
                           sample_shapes=digits.sample_shapes, device="cpu")
        activations = capture_activations(model, digits)
    return [layer.values[:DEFAULT_MAX_SAMPLES] for layer in activations.layers.values()]


# The reference implementation (Kornblith et al. 2019, "Reproducing the results" notebook).
def _gram_linear(x: np.ndarray) -> np.ndarray:
    return x.dot(x.T)


def _center_gram(gram: np.ndarray, unbiased: bool) -> np.ndarray:
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def _cka(gram_x: np.ndarray, gram_y: np.ndarray, debiased: bool) -> float:
    gram_x, gram_y = _center_gram(gram_x, debiased), _center_gram(gram_y, debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return float(scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def _per_pair(features: list[np.ndarray], debiased: bool) -> np.ndarray:
    matrix = np.empty((len(features), len(features)))
    for i, x in enumerate(features):
        for j in range(i, len(features)):
            y = features[j]
            matrix[i, j] = matrix[j, i] = _cka(_gram_linear(x.astype(np.float64)),
                                               _gram_linear(y.astype(np.float64)), debiased)
    return matrix


def run(threads: int, features: list[np.ndarray], debiased: bool) -> tuple[float, float, float]:
    """``(per-pair seconds, layerlens seconds, max |difference|)``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            baseline = _per_pair(features, debiased)
            candidate = cka_matrix(features, debiased=debiased).matrix
            base_s, cand_s = paired_medians(lambda: _per_pair(features, debiased),
                                            lambda: cka_matrix(features, debiased=debiased),
                                            repeats=3, warmup=0)
    finally:
        torch.set_num_threads(previous)
    return base_s, cand_s, float(np.abs(baseline - candidate).max())


def main() -> None:
    features = _features()
    widths = [f.shape[1] for f in features]
    print(f"CKA over all layer pairs: digits CNN, {len(widths)} layers (widths {widths}), "
          f"{len(features[0])} samples, CPU, float64")
    print(f"{'estimator':>9} {'threads':>7} {'per-pair s':>10} {'layerlens s':>12} "
          f"{'ratio':>6} {'max |diff|':>10}  target >= {TARGET}, |diff| <= {MAX_DIFFERENCE}")
    for debiased in (False, True):
        for threads in sorted({1, torch.get_num_threads()}):
            base_s, cand_s, gap = run(threads, features, debiased)
            ratio = base_s / cand_s
            verdict = "ok" if ratio >= TARGET and gap <= MAX_DIFFERENCE else "MISSED"
            print(f"{'debiased' if debiased else 'biased':>9} {threads:7d} {base_s:10.2f} "
                  f"{cand_s:12.2f} {ratio:6.2f} {gap:10.1e}  {verdict}")


if __name__ == "__main__":
    main()
