"""What every analysis's ``run(spec, ctx)`` receives, and how it goes over layers.

``run`` turns its spec entry into its typed section of ``report.json`` (see
the package docstring), writing figures and arrays through ``ctx.artifacts``.
A layer an analysis does not apply to is a :class:`.sections.SkippedLayer`;
a layer whose computation raised is a :class:`.sections.FailedLayer`
(:func:`each_layer`), and the other layers still run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from layerlens.analyses.sections import FailedLayer
from layerlens.capture import Activations, LayerActivations, ProgressCallback
from layerlens.data import Dataset
from layerlens.errors import InputError, is_allocation_failure, one_line
from layerlens.models import ProbedModel, select_layers

Row = TypeVar("Row")


class ArtifactWriter:
    """Writes a job's artifacts (PNG, NPY) into one folder; returns names relative to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def name(*parts: str, suffix: str) -> str:
        """A safe file name: ``("projection", "/0/Conv"), ".png"`` -> ``projection_0_Conv.png``."""
        joined = "_".join(re.sub(r"[^A-Za-z0-9.]+", "_", p).strip("_.") for p in parts if p)
        return f"{joined}{suffix}"

    def png(self, figure: Any, *parts: str) -> str:
        """Save a matplotlib figure (and close it); returns the artifact name."""
        from layerlens.report.plots import plt

        name = self.name(*parts, suffix=".png")
        figure.savefig(self.folder / name, dpi=100)
        plt.close(figure)
        return name

    def image(self, picture: np.ndarray, *parts: str) -> str:
        """Save an (H, W) grey image in [0, 1] or an (H, W, 3) RGB image as PNG, no axes.

        About 50x faster than a matplotlib figure: for the many small per-unit images.
        """
        import matplotlib.image

        name = self.name(*parts, suffix=".png")
        matplotlib.image.imsave(self.folder / name, np.clip(picture, 0.0, 1.0), cmap="gray",
                                vmin=0.0, vmax=1.0)
        return name

    def npy(self, array: np.ndarray, *parts: str) -> str:
        name = self.name(*parts, suffix=".npy")
        np.save(self.folder / name, np.asarray(array), allow_pickle=False)
        return name


@dataclass
class Reference:
    """Another model captured on the same samples (``layerlens analyze --compare-to``).

    Attributes
    ----------
    name : how the report names it (its file name, or the name it was uploaded as).
    model : the probed model.
    activations : its captured layers; row i is the same sample as in the context's.
    """

    name: str
    model: ProbedModel
    activations: Activations


@dataclass
class AnalysisContext:
    """Everything an analysis may use.

    Attributes
    ----------
    model : the probed model (``capture_torch`` for gradients).
    dataset : the analysed samples (after ``--max-samples``), aligned with
        ``activations``: row i of every layer's values is ``dataset.x[i]``.
    activations : captured layers in forward order; ``values`` (n, d) float32.
    artifacts : where figures and arrays go.
    device : ``cpu`` or ``cuda``, for torch work.
    progress : optional ``(step, total, metrics) -> stop?`` callback.
    reference : the model to compare with, when the job names one (``compare_to``).
    """

    model: ProbedModel
    dataset: Dataset
    activations: Activations
    artifacts: ArtifactWriter
    device: str = "cpu"
    progress: ProgressCallback | None = None
    reference: Reference | None = None

    def layers(self, patterns: Sequence[str] | None) -> list[LayerActivations]:
        """Captured layers matching the spec's ``layers`` patterns (all when None), in order.

        Raises LayerSelectionError naming a pattern that matches no captured layer.
        """
        captured = [entry.info for entry in self.activations.layers.values()]
        return [self.activations.layers[info.name] for info in select_layers(captured, patterns)]

    def report_progress(self, step: int, total: int, **metrics: float) -> bool:
        """Forward progress; True when the caller asked to stop."""
        return bool(self.progress and self.progress(step, total, metrics))


def each_layer(ctx: AnalysisContext, layers: Sequence[LayerActivations],
               compute: Callable[[LayerActivations], Row],
               metrics: Callable[[Row], dict[str, float]] | None = None,
               ) -> list[Row | FailedLayer]:
    """``compute`` on every layer in order, reporting progress after each.

    A layer whose ``compute`` raises becomes a :class:`FailedLayer` with the
    error in one line, and the next layer runs. Bad input (:class:`InputError`)
    and running out of memory still end the analysis. Stops early when the
    progress callback asks: the rows of the layers done so far are returned.
    """
    rows: list[Row | FailedLayer] = []
    for step, captured in enumerate(layers, start=1):
        try:
            row: Row | FailedLayer = compute(captured)
        except InputError:
            raise
        except Exception as exc:
            if isinstance(exc, MemoryError) or is_allocation_failure(exc):
                raise
            row = FailedLayer(layer=captured.info.name, failed=one_line(exc))
        rows.append(row)
        values = {} if metrics is None or isinstance(row, FailedLayer) else metrics(row)
        if ctx.report_progress(step, len(layers), **values):
            break
    return rows
