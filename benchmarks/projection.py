"""t-SNE of 10,000 points: layerlens (openTSNE) versus scikit-learn's Barnes-Hut t-SNE.

Data: scikit-learn's 1797 digits (64 raw pixel values, 0..16) replicated to
10,000 points, each copy jittered by seeded Gaussian noise (sigma 1 pixel
value), labels kept. Both methods get the same 64-D points, perplexity 30,
seed 0 and the same number of threads. Timed like for like, once each: the
embedding of layerlens (``project_layer``'s t-SNE path: PCA to 50 components
when wider, openTSNE with FFT-accelerated gradients) against
``sklearn.manifold.TSNE`` (default Barnes-Hut, 1000 iterations). The full
per-layer work of layerlens, which adds neighbourhood hit and
trustworthiness, is timed too and printed beside. Quality: NH(6) of both
embeddings, computed the same way. Targets: at least 5x; NH within 0.01.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.manifold import TSNE

from layerlens.analyses.projection.neighborhood import neighborhood_hit, trustworthiness
from layerlens.analyses.projection.science import (
    PCA_PREPROCESSING,
    pca_embedding,
    project_layer,
    tsne_embedding,
)

N_POINTS = 10_000
JITTER = 1.0
PERPLEXITY = 30.0
K = 6
TARGET_SPEEDUP = 5.0
TARGET_NH_GAP = 0.01


def jittered_digits(n_points: int = N_POINTS, *, sigma: float = JITTER,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digits replicated to ``n_points`` rows plus N(0, sigma^2) noise; ``(x, y)``."""
    digits = load_digits()
    rows = np.resize(np.arange(len(digits.target)), n_points)
    noise = np.random.default_rng(seed).normal(0.0, sigma, (n_points, digits.data.shape[1]))
    return (digits.data[rows] + noise).astype(np.float32), digits.target[rows]


def run() -> dict[str, tuple[float, float, float]]:
    """``{name: (seconds, NH(6), T(6))}`` for scikit-learn and layerlens (embedding, and the
    whole per-layer projection with its metrics)."""
    x, y = jittered_digits()
    threads = torch.get_num_threads()
    start = time.perf_counter()
    source = x
    if x.shape[1] > PCA_PREPROCESSING:
        source = pca_embedding(x, n_components=PCA_PREPROCESSING, seed=0)
    embedding = tsne_embedding(source, perplexity=PERPLEXITY, seed=0)
    embedding_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ours = project_layer(x, y, method="tsne", k=K, seed=0)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    theirs = TSNE(n_components=2, perplexity=PERPLEXITY, random_state=0,
                  n_jobs=threads).fit_transform(x)
    theirs_seconds = time.perf_counter() - start
    return {
        "scikit-learn": (theirs_seconds, neighborhood_hit(theirs, y, k=K),
                         trustworthiness(x, theirs, k=K)),
        "layerlens": (embedding_seconds, neighborhood_hit(embedding, y, k=K),
                      trustworthiness(x, embedding, k=K)),
        "layerlens+metrics": (ours_seconds, ours.neighborhood_hit, ours.trustworthiness),
    }


def main() -> None:
    print(f"t-SNE: {N_POINTS} jittered digits (64-D, sigma {JITTER}), perplexity {PERPLEXITY:g}, "
          f"seed 0, {torch.get_num_threads()} threads")
    rows = run()
    print(f"{'method':<18} {'seconds':>8} {'NH(6)':>7} {'T(6)':>7}")
    for name, (seconds, nh, trust) in rows.items():
        print(f"{name:<18} {seconds:8.1f} {nh:7.4f} {trust:7.4f}")
    base, ours = rows["scikit-learn"], rows["layerlens"]
    speedup = base[0] / ours[0]
    gap = abs(base[1] - ours[1])
    print(f"speed-up {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x: "
          f"{'ok' if speedup >= TARGET_SPEEDUP else 'MISSED'}); "
          f"NH gap {gap:.4f} (target <= {TARGET_NH_GAP}: "
          f"{'ok' if gap <= TARGET_NH_GAP else 'MISSED'})")


if __name__ == "__main__":
    main()
