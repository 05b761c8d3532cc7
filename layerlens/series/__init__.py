"""Checkpoint series: the analyses over the checkpoints of one training run (``dynamics``).

``layerlens analyze CKPT1 CKPT2 ...`` and ``POST /v1/jobs {"series": ...}`` call
:func:`analyze_series`; :mod:`.steps` tells each checkpoint's step, :mod:`.dynamics`
gathers the per-step sections, :mod:`.projection` chains the t-SNE embeddings from step to
step and :mod:`.figures` draws the pictures. Names are imported on first use, so that the
command line reads steps without loading torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerlens.series.engine import Checkpoint, analyze_series, checkpoints
    from layerlens.series.steps import checkpoint_steps, parse_steps, step_from_name

_EXPORTS = {
    "Checkpoint": "layerlens.series.engine",
    "analyze_series": "layerlens.series.engine",
    "checkpoints": "layerlens.series.engine",
    "checkpoint_steps": "layerlens.series.steps",
    "parse_steps": "layerlens.series.steps",
    "step_from_name": "layerlens.series.steps",
}

__all__ = ["Checkpoint", "analyze_series", "checkpoint_steps", "checkpoints", "parse_steps",
           "step_from_name"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlens.series' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
