"""The registry of analysis kinds: ONE line per kind below; everything else derives from it.

From the registry come the spec union (:mod:`layerlens.spec`, hence the CLI's
``--analyses`` and the body of ``POST /v1/jobs`` in OpenAPI), the typed
``report.analyses`` (:func:`layerlens.report.schema.report_model`), the HTML
sections and the default analyses of a job. torch-free.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from layerlens.analyses.kind import AnalysisKind, KindError

#: The built-in kinds, in report order: the package of each defines ``KIND``.
BUILTIN = (
    "layerlens.analyses.linear_probe",
    "layerlens.analyses.projection",
    "layerlens.analyses.mutual_information",
    "layerlens.analyses.activation_maximization",
    "layerlens.analyses.similarity",
    "layerlens.analyses.attribution",
    "layerlens.analyses.gradient_snr",
    "layerlens.analyses.filters",
)


class Registry:
    """Analysis kinds by name, in registration order. ``version`` counts registrations, so
    what is derived from the registry can be cached against it."""

    def __init__(self) -> None:
        self._kinds: dict[str, AnalysisKind] = {}
        self.version = 0

    def register(self, kind: AnalysisKind) -> AnalysisKind:
        if not isinstance(kind, AnalysisKind):
            raise KindError(f"register() takes an AnalysisKind, got {type(kind).__name__}")
        if kind.name in self._kinds and self._kinds[kind.name] is not kind:
            raise KindError(f"analysis kind '{kind.name}' is registered already")
        self._kinds[kind.name] = kind
        self.version += 1
        return kind

    def unregister(self, name: str) -> None:
        """Remove a kind (a plugin unloading, a test cleaning up)."""
        del self._kinds[name]
        self.version += 1

    def __getitem__(self, name: str) -> AnalysisKind:
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[AnalysisKind]:
        return iter(list(self._kinds.values()))

    def __len__(self) -> int:
        return len(self._kinds)

    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)


REGISTRY = Registry()


def register(kind: AnalysisKind) -> AnalysisKind:
    """Add a kind (a plugin's, or a test's); the derived schemas pick it up."""
    return REGISTRY.register(kind)


for _package in BUILTIN:
    register(importlib.import_module(_package).KIND)
