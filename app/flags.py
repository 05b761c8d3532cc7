"""The option flags of ``layerlens analyze``, derived from the job options schema.

Every field of :class:`layerlens.options.JobOptions` but ``analyses`` (which
``--analyses``/``--spec`` give) becomes ``--field-name``: lists are
comma-separated, ``Literal`` fields take their choices, and the schema itself
converts and checks the values, so the CLI and ``POST /v1/jobs`` accept the
same options with the same rules.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from layerlens.options import JobOptions
from layerlens.spec import AnalysisSpec

#: Options given another way than a flag of their own name.
NOT_FLAGS = ("analyses",)


def flag(field: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def option_flags() -> dict[str, str]:
    """Field -> flag, for every option a flag carries."""
    return {name: flag(name) for name in JobOptions.model_fields if name not in NOT_FLAGS}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per job option; values stay text (lists split at commas) until validated."""
    for name, info in JobOptions.model_fields.items():
        if name in NOT_FLAGS:
            continue
        annotation = _without_none(info.annotation)
        default = info.get_default(call_default_factory=True)
        shown = "" if default is None else f" (default {_shown(name, default)})"
        help_text = f"{info.description or name}{shown}"
        if typing.get_origin(annotation) is Literal:
            parser.add_argument(flag(name), dest=name, choices=typing.get_args(annotation),
                                help=help_text)
        elif typing.get_origin(annotation) is list:
            parser.add_argument(flag(name), dest=name, type=_comma_list,
                                metavar=name.upper(), help=f"{help_text}; comma-separated")
        else:
            parser.add_argument(flag(name), dest=name, help=help_text)


def options_from_args(args: argparse.Namespace,
                      analyses: list[AnalysisSpec] | None) -> JobOptions:
    """The job options the flags give (the schema's defaults for the others); raises
    :class:`~layerlens.errors.InputError` naming the flag of a bad value."""
    values: dict[str, Any] = {name: getattr(args, name) for name in option_flags()
                              if getattr(args, name, None) is not None}
    return JobOptions.parse({**values, "analyses": analyses}, spell=flag)


def _without_none(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _shown(name: str, default: Any) -> str:
    if name == "memory_budget":
        return f"{default / 1024**3:g}GB"
    return str(default)
