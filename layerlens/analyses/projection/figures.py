"""The projection's figure: a layer's 2-D projection as a scatter coloured by class."""

from __future__ import annotations

from typing import Any

import numpy as np

from layerlens.report.plots import class_colors, plt

_AXIS_UNITS = {"pca": "activation units", "tsne": "arbitrary units", "umap": "arbitrary units"}
_AXIS_NAMES = {"pca": "PC", "tsne": "t-SNE", "umap": "UMAP"}


def scatter_figure(coordinates: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
                   *, layer: str, method: str, k: int, neighborhood_hit: float,
                   trustworthiness: float) -> Any:
    """The projection as a scatter plot coloured by class, with a legend."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6), constrained_layout=True)
    n_classes = len(class_names)
    colors = class_colors(n_classes)
    size = float(np.clip(2000.0 / max(len(coordinates), 1), 2.0, 30.0))
    for index, name in enumerate(class_names):
        mask = labels == index
        if mask.any():
            ax.scatter(coordinates[mask, 0], coordinates[mask, 1], s=size, color=colors[index],
                       alpha=0.8, linewidths=0, label=name)
    axis, units = _AXIS_NAMES[method], _AXIS_UNITS[method]
    ax.set_xlabel(f"{axis} 1 ({units})")
    ax.set_ylabel(f"{axis} 2 ({units})")
    ax.set_title(f"{layer}\n{method.upper() if method == 'pca' else _AXIS_NAMES[method]}: "
                 f"NH({k}) = {neighborhood_hit:.3f}, trustworthiness({k}) = "
                 f"{trustworthiness:.3f}", fontsize=10)
    if n_classes <= 30:
        ax.legend(title="class", fontsize=7, markerscale=max(1.0, 6.0 / np.sqrt(size)),
                  loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  ncols=1 if n_classes <= 15 else 2)
    return fig
