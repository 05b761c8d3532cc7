"""The analysis spec: one entry per analysis, the same list ``POST /v1/jobs`` takes.

Unknown kinds and unknown keys are errors naming the offending key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from layerlens.errors import InputError


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[str] | None = Field(default=None, description="names or glob patterns")
    seed: int = 0


class LinearProbeSpec(_Entry):
    kind: Literal["linear_probe"]
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)


class ProjectionSpec(_Entry):
    kind: Literal["projection"]
    method: Literal["tsne", "pca", "umap"] = "tsne"
    k: int = Field(default=6, ge=1)
    max_samples: int | None = Field(default=None, ge=2)


class MutualInformationSpec(_Entry):
    kind: Literal["mutual_information"]
    estimator: Literal["binning", "adaptive", "kde", "ksg"] = "binning"
    n_bins: int = Field(default=30, ge=2)
    bin_range: Literal["observed"] | tuple[float, float] = "observed"
    noise_variance: float | None = Field(default=None, gt=0.0)


class ActivationMaximizationSpec(_Entry):
    kind: Literal["activation_maximization"]
    units: list[int] | None = None
    objective: Literal["channel", "neuron"] = "channel"
    steps: int = Field(default=512, ge=1)
    lr: float | None = Field(default=None, gt=0.0)
    max_units: int = Field(default=8, ge=1, description="units per layer when units is None")
    l2: float = Field(default=0.0, ge=0.0, description="L2 decay weight (Yosinski et al. 2015)")
    blur_every: int = Field(default=0, ge=0, description="blur images every N steps (0: never)")
    jitter: int | None = Field(default=None, ge=0, description="pixels (None: by image size)")


AnalysisSpec = Annotated[
    LinearProbeSpec | ProjectionSpec | MutualInformationSpec | ActivationMaximizationSpec,
    Field(discriminator="kind"),
]
KINDS = ("linear_probe", "projection", "mutual_information", "activation_maximization")
_list_adapter = TypeAdapter(list[AnalysisSpec])


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    index, *rest = error["loc"]
    if rest and rest[0] in KINDS:
        rest = rest[1:]
    where = f"analyses[{index}]" + "".join(f".{part}" for part in rest)
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"{where}.kind must be one of {', '.join(KINDS)}"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{rest[-1]}' in analyses[{index}]"
    return f"{where}: {error['msg']}"


def parse_spec(entries: Any) -> list[AnalysisSpec]:
    """Validate a list of spec entries; raise :class:`InputError` naming the key."""
    if not isinstance(entries, list):
        raise InputError("the analyses spec must be a list of {\"kind\": ...} entries")
    try:
        spec = _list_adapter.validate_python(entries)
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
    return parse_spec([{"kind": kind} for kind in KINDS])


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
