"""The CI policy file: which analyses to run and the rules their report must satisfy.

```yaml
analyses:                         # the same list POST /v1/jobs takes; omitted: all four
  - {kind: linear_probe}
  - {kind: projection, method: pca}
max_samples: 1000                 # optional, as in a job
rules:
  - metric: linear_probe.test_accuracy
    layer: last_hidden            # a layer name, `last` or `last_hidden`
    min: 0.9
  - metric: projection.neighborhood_hit
    layers: "/*Relu*"             # a glob: every matching layer must pass
    min: 0.8
  - metric: mutual_information.I_TY
    layer: last
    min_fraction_of: mutual_information.H_Y
    fraction: 0.9
  - metric: linear_probe.test_accuracy
    layer: last_hidden
    max_drop: 0.02                # against --baseline REPORT.json
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

LAYER_ALIASES = ("last", "last_hidden")


class PolicyError(ValueError):
    """The policy is invalid, or names a layer or metric the report lacks (exit 2)."""


class Rule(BaseModel):
    """One check over a per-layer metric of the report."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    metric: str = Field(pattern=r"^[a-z_]+\.[A-Za-z_]+$",
                        description="<analysis kind>.<per-layer field>, e.g. "
                                    "linear_probe.test_accuracy")
    layer: str | None = None
    layers: str | None = Field(None, description="glob over layer names; all must pass")
    min: float | None = None
    max: float | None = None
    min_fraction_of: str | None = Field(None, pattern=r"^[a-z_]+\.[A-Za-z_]+$",
                                        description="<analysis kind>.<section field>")
    fraction: float | None = Field(None, gt=0)
    max_drop: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if (self.layer is None) == (self.layers is None):
            raise ValueError("give exactly one of layer (a name, last or last_hidden) "
                             "and layers (a glob)")
        if (self.min_fraction_of is None) != (self.fraction is None):
            raise ValueError("min_fraction_of and fraction go together")
        if all(v is None for v in (self.min, self.max, self.min_fraction_of, self.max_drop)):
            raise ValueError("a rule needs a threshold: min, max, min_fraction_of + fraction, "
                             "or max_drop")
        return self

    @property
    def kind(self) -> str:
        return self.metric.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.metric.split(".", 1)[1]

    @property
    def title(self) -> str:
        return self.name or f"{self.metric} @ {self.layer or self.layers}"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analyses: list[dict[str, Any]] | None = None
    layers: list[str] | None = None
    max_samples: int | None = Field(None, ge=1)
    seed: int = 0
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _rules_have_their_analysis(self) -> Policy:
        if self.analyses is not None:
            kinds = {entry.get("kind") for entry in self.analyses}
            for index, rule in enumerate(self.rules):
                if rule.kind not in kinds:
                    raise ValueError(f"rules[{index}] reads {rule.metric}, but the policy's "
                                     f"analyses do not run {rule.kind}")
        return self

    @property
    def needs_baseline(self) -> bool:
        return any(rule.max_drop is not None for rule in self.rules)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "policy"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def load_policy(path: Path) -> Policy:
    """Read a YAML (or JSON) policy; :class:`PolicyError` with one line on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the policy {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path}: not valid JSON ({exc})") from exc
    else:
        try:
            import yaml
        except ImportError as exc:
            raise PolicyError("YAML policies need PyYAML: pip install 'layerlens-client[check]' "
                              "(or write the policy as .json)") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the policy must be a mapping with a `rules` list")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{path}: {_describe(exc)}") from exc
