"""The ``dynamics`` section: per-step report sections gathered into ``[step][layer]`` matrices.

Pure data assembly (no figures, no I/O): each matrix row is one checkpoint in
step order, each column one of the layers common to every checkpoint; a layer
an analysis skipped or failed at a step is null there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from layerlens.analyses.mutual_information.dynamics import TOLERANCE_BITS, compression
from layerlens.report.schema import (
    Compression,
    FilterDynamics,
    InformationDynamics,
    Matrix,
    ProbeDynamics,
    SnrDynamics,
)


def _rows(section: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A section's per-layer rows by layer name (none for a missing or failed section)."""
    if not section or "failed" in section:
        return {}
    return {row["layer"]: row for row in section.get("layers", []) if isinstance(row, dict)}


def matrix(sections: Sequence[dict[str, Any] | None], layers: Sequence[str],
           key: str) -> Matrix:
    """``[step][layer]`` of ``row[key]``, null where a step has no such row or value."""
    out: Matrix = []
    for section in sections:
        rows = _rows(section)
        out.append([_number(rows.get(name, {}).get(key)) for name in layers])
    return out


def _number(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def probe_dynamics(sections: Sequence[dict[str, Any] | None],
                   layers: Sequence[str]) -> ProbeDynamics:
    return ProbeDynamics(test_accuracy=matrix(sections, layers, "test_accuracy"))


def information_dynamics(sections: Sequence[dict[str, Any] | None], layers: Sequence[str],
                         steps: Sequence[int]) -> InformationDynamics:
    """I(X;T), I(T;Y) per step and layer, and each layer's compression."""
    i_xt = matrix(sections, layers, "I_XT")
    rows = []
    for column, name in enumerate(layers):
        rows.append(Compression(layer=name,
                                **compression(steps, [row[column] for row in i_xt])))
    estimator = next((s["estimator"] for s in sections if s and "estimator" in s), "unknown")
    return InformationDynamics(estimator=estimator, I_XT=i_xt,
                               I_TY=matrix(sections, layers, "I_TY"), compression=rows,
                               tolerance_bits=TOLERANCE_BITS)


def snr_dynamics(sections: Sequence[dict[str, Any] | None]) -> SnrDynamics | None:
    """The gradient SNR of the weighted layers (those of the last step's section)."""
    weighted = [name for name, row in _rows(sections[-1]).items() if "snr" in row]
    if not weighted:
        return None
    return SnrDynamics(layers=weighted, snr=matrix(sections, weighted, "snr"),
                       snr_norms=matrix(sections, weighted, "snr_norms"))


def filter_dynamics(sections: Sequence[dict[str, Any] | None]) -> FilterDynamics | None:
    """The first layer's average frequency response at every step, at the last step's layer
    and frequencies; None when a step lacks it (a curve missing from the picture would
    mislead)."""
    last = sections[-1]
    if not last or "failed" in last or not last.get("frequencies") or not last.get("afr"):
        return None
    layer, frequencies = last["layer"], last["frequencies"]
    afr = []
    for section in sections:
        if (not section or "failed" in section or section.get("layer") != layer
                or len(section.get("afr") or []) != len(frequencies)):
            return None
        afr.append([float(value) for value in section["afr"]])
    return FilterDynamics(layer=layer, frequencies=[float(f) for f in frequencies], afr=afr)
