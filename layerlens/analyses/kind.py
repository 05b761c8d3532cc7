"""What makes an analysis kind: :class:`AnalysisKind`, checked whole when it is made.

torch-free: the HTTP API builds its request schema from these entries.
"""

from __future__ import annotations

import importlib
import importlib.util
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class KindError(TypeError):
    """A registered analysis kind lacks a part, or a part has the wrong shape."""


@dataclass(frozen=True)
class AnalysisKind:
    """One analysis kind and every part the rest of the system derives from it.

    Attributes
    ----------
    name : the ``kind`` of its spec entries and its key under ``report.analyses``.
    title : heading of its report section (and its entry in the table of contents).
    spec : pydantic model of one spec entry (torch-free); its ``kind`` field is
        ``Literal[name]``. Unknown keys must be refused (``extra="forbid"``).
    section : pydantic model of its ``report.analyses.<name>`` section (torch-free).
    run : ``"module:function"``, imported on first use; ``run(spec, ctx)`` returns
        the section (a ``section`` instance or a dict it validates).
    figures : module drawing its PNG figures (matplotlib, no science).
    template : Jinja template rendering the section; it sees ``section`` and ``report``.
    """

    name: str
    title: str
    spec: type[BaseModel]
    section: type[BaseModel]
    run: str
    figures: str
    template: Path

    def __post_init__(self) -> None:
        where = f"analysis kind '{self.name}'"
        if not self.name.isidentifier():
            raise KindError(f"{where}: the name must be an identifier")
        if not (isinstance(self.spec, type) and issubclass(self.spec, BaseModel)):
            raise KindError(f"{where}: spec must be a pydantic model class")
        field = self.spec.model_fields.get("kind")
        if field is None or typing.get_args(field.annotation) != (self.name,):
            raise KindError(f"{where}: spec {self.spec.__name__} needs the field "
                            f"kind: Literal['{self.name}']")
        if self.spec.model_config.get("extra") != "forbid":
            raise KindError(f"{where}: spec {self.spec.__name__} must forbid unknown keys")
        if not (isinstance(self.section, type) and issubclass(self.section, BaseModel)):
            raise KindError(f"{where}: section must be a pydantic model class")
        module, _, function = self.run.partition(":")
        if not function:
            raise KindError(f"{where}: run must read 'module:function', got '{self.run}'")
        for part, path in (("run", module), ("figures", self.figures)):
            if _find(path) is None:
                raise KindError(f"{where}: {part} module '{path}' does not exist")
        if not Path(self.template).is_file():
            raise KindError(f"{where}: template {self.template} does not exist")

    def runner(self) -> Callable[[Any, Any], Any]:
        """The ``run(spec, ctx)`` function (imports the analysis and torch)."""
        module, _, function = self.run.partition(":")
        run: Callable[[Any, Any], Any] = getattr(importlib.import_module(module), function)
        return run


def _find(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is missing
        return None
