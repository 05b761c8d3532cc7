"""The analysis spec: one entry per analysis, the same list ``POST /v1/jobs`` takes.

Every kind comes from :mod:`layerlens.analyses.registry`. Unknown kinds and
unknown keys are errors naming the offending key. torch-free.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from layerlens.analyses.registry import REGISTRY
from layerlens.analyses.sections import SpecEntry
from layerlens.errors import InputError


def spec_union() -> Any:
    """The spec entry type: a union of every registered kind's spec, told apart by ``kind``."""
    return _derived()[0]


def kinds() -> tuple[str, ...]:
    """Every registered kind, in report order."""
    return REGISTRY.names()


@functools.cache
def _derived_at(version: int) -> tuple[Any, TypeAdapter[Any]]:
    specs = tuple(kind.spec for kind in REGISTRY)
    union: Any = (specs[0] if len(specs) == 1 else
                  Annotated[Union[specs], Field(discriminator="kind")])  # noqa: UP007
    return union, TypeAdapter(list[union])


def _derived() -> tuple[Any, TypeAdapter[Any]]:
    return _derived_at(REGISTRY.version)


#: A validated spec entry: an instance of one registered kind's spec model.
AnalysisSpec = SpecEntry


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    index, *rest = error["loc"]
    if rest and rest[0] in REGISTRY:
        rest = rest[1:]
    where = f"analyses[{index}]" + "".join(f".{part}" for part in rest)
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"{where}.kind must be one of {', '.join(kinds())}"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{rest[-1]}' in analyses[{index}]"
    return f"{where}: {error['msg']}"


def parse_spec(entries: Any) -> list[AnalysisSpec]:
    """Validate a list of spec entries; raise :class:`InputError` naming the key."""
    if not isinstance(entries, list):
        raise InputError("the analyses spec must be a list of {\"kind\": ...} entries")
    try:
        spec: list[AnalysisSpec] = _derived()[1].validate_python(entries)
    except ValidationError as exc:
        raise InputError(f"invalid analysis spec: {_first_problem(exc)}") from exc
    kinds = [entry.kind for entry in spec]
    repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if repeated:
        raise InputError(f"invalid analysis spec: '{repeated[0]}' appears more than once; "
                         "give one entry per kind")
    return spec


def default_spec() -> list[AnalysisSpec]:
    """Every analysis with its default parameters."""
    return parse_spec([{"kind": kind} for kind in kinds()])


def load_spec_file(path: Path) -> list[AnalysisSpec]:
    """``{"analyses": [...]}`` from a JSON file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read spec file '{path}': {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"spec file '{path}' is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or set(document) != {"analyses"}:
        raise InputError(f"spec file '{path}' must be an object with one key, \"analyses\"")
    return parse_spec(document["analyses"])


def spec_from_names(names: str) -> list[AnalysisSpec]:
    """``--analyses a,b``: each kind with its default parameters."""
    kinds = [name.strip() for name in names.split(",") if name.strip()]
    if not kinds:
        raise InputError("--analyses needs at least one kind")
    return parse_spec([{"kind": kind} for kind in kinds])
