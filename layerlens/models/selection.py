"""Choose layers by exact name or glob pattern."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from layerlens.errors import LayerSelectionError
from layerlens.models.base import LayerInfo


def select_layers(layers: Sequence[LayerInfo], patterns: Sequence[str] | None) -> list[LayerInfo]:
    """Layers matching any of ``patterns`` (names or globs), in forward order.

    ``None`` or an empty list selects every layer. A pattern that matches no
    layer is an error naming it and a few existing layers.
    """
    if not patterns:
        return list(layers)
    chosen: set[str] = set()
    for pattern in patterns:
        matches = {layer.name for layer in layers
                   if layer.name == pattern or fnmatch.fnmatchcase(layer.name, pattern)}
        if not matches:
            sample = ", ".join(layer.name for layer in layers[:6])
            more = ", ..." if len(layers) > 6 else ""
            raise LayerSelectionError(
                f"layer '{pattern}' matches no layer of the model (layers: {sample}{more})")
        chosen |= matches
    return [layer for layer in layers if layer.name in chosen]
