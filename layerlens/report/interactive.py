"""Hover data of the projection pictures: the 2-D points embedded in the page itself.

Each projected layer's coordinates (the ``.npy`` artifact) are scaled to a
``0..SCALE`` box (per axis, min to max; y grows upward as in the PNG), rounded to
integers and embedded as base64 bytes (x0, y0, x1, y1, ...: 2.7 characters a point);
the page's inline script draws them as SVG circles and names a point's sample index
and class on hover. No network access: nothing is fetched.
At most :data:`MAX_POINTS_PER_LAYER` points per layer and :data:`MAX_POINTS_TOTAL`
over all layers (the same rows in every layer, a seeded random choice), so
the page stays within :data:`layerlens.report.html.MAX_HTML_BYTES`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import to_hex

from layerlens.report.plots import class_colors

#: Points drawn per layer at most.
MAX_POINTS_PER_LAYER = 1000
#: Points drawn over all layers at most (400 layers: 250 points each, ~0.27 MB of HTML).
MAX_POINTS_TOTAL = 100_000
#: The drawing box: coordinates become integers 0..SCALE (one byte each; a small multiple
#: is about 200 px wide).
SCALE = 255


def _load(root: Path, name: str | None) -> np.ndarray | None:
    if not name or not (root / name).is_file():
        return None
    return np.load(root / name, allow_pickle=False)


def projection_points(section: dict[str, Any], root: Path) -> dict[str, Any] | None:
    """The hover data of an ``analyses.projection`` section whose artifacts are in ``root``.

    ``{"samples": [sample index per drawn point], "labels": [class index per point],
    "classes": [class names], "colors": ["#rrggbb" per class, as in the PNG],
    "layers": {layer position: base64 of the bytes x0, y0, x1, y1, ...}}``, or
    None when the section lacks its labels or any coordinates (older reports).
    """
    labels = _load(root, section.get("labels"))
    classes = section.get("class_names")
    if labels is None or classes is None:
        return None
    drawn = [(i, row) for i, row in enumerate(section["layers"]) if row.get("coordinates")]
    if not drawn:
        return None
    n = len(labels)
    per_layer = min(n, MAX_POINTS_PER_LAYER, max(1, MAX_POINTS_TOTAL // len(drawn)))
    rows = np.sort(np.random.default_rng(0).permutation(n)[:per_layer])
    indices = _load(root, section.get("sample_indices"))
    samples = rows if indices is None else indices[rows]
    layers: dict[str, str] = {}
    for position, row in drawn:
        coordinates = _load(root, row["coordinates"])
        if coordinates is None or coordinates.shape != (n, 2):
            return None
        points = scaled(coordinates)[rows].astype(np.uint8).reshape(-1)
        layers[str(position)] = base64.b64encode(points.tobytes()).decode("ascii")
    return {"samples": samples.tolist(), "labels": labels[rows].tolist(),
            "classes": [str(name) for name in classes],
            "colors": [to_hex(color) for color in class_colors(len(classes))],
            "layers": layers}


def scaled(coordinates: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates -> (n, 2) integers in 0..SCALE, per axis; y flipped (SVG y grows
    downward); a constant axis sits in the middle."""
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    unit = np.where(high > low, (coordinates - low) / span, 0.5)
    unit[:, 1] = 1.0 - unit[:, 1]
    return np.rint(unit * SCALE).astype(np.int64)


def as_script_json(data: Any) -> str:
    """``data`` as JSON safe inside ``<script type="application/json">`` (no ``</``)."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
