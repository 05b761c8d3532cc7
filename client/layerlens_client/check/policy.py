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
  - layers: "*"
    min_cka_to_baseline: 0.9      # against --baseline-model FILE
```

``min_cka_to_baseline`` reads the linear CKA between each layer and its counterpart in the
baseline model (the layer of the same name; the baseline's most similar layer when it has
none of that name), from a similarity analysis with ``compare_to`` that the check adds to
the job (with the policy's own ``similarity`` entry when it lists one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

LAYER_ALIASES = ("last", "last_hidden")
#: The metric a ``min_cka_to_baseline`` rule reads (it names no metric of its own).
CKA_METRIC = "similarity.cka_to_baseline"


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
    min_cka_to_baseline: float | None = Field(
        None, ge=-1, le=1, description="linear CKA to the same layer of --baseline-model "
                                       "(a similarity in [0, 1]) must be at least this")

    @model_validator(mode="before")
    @classmethod
    def _cka_reads_its_own_metric(cls, data: Any) -> Any:
        if isinstance(data, dict) and "min_cka_to_baseline" in data and "metric" not in data:
            return {**data, "metric": CKA_METRIC}
        return data

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if (self.layer is None) == (self.layers is None):
            raise ValueError("give exactly one of layer (a name, last or last_hidden) "
                             "and layers (a glob)")
        if (self.min_fraction_of is None) != (self.fraction is None):
            raise ValueError("min_fraction_of and fraction go together")
        others = (self.min, self.max, self.min_fraction_of, self.max_drop)
        if self.min_cka_to_baseline is not None:
            if self.metric != CKA_METRIC or any(v is not None for v in others):
                raise ValueError("min_cka_to_baseline is a rule of its own: give it with "
                                 "layer or layers only (no metric, no other threshold)")
        elif self.metric == CKA_METRIC:
            raise ValueError(f"{CKA_METRIC} is read by min_cka_to_baseline: write e.g. "
                             "`min_cka_to_baseline: 0.9`")
        elif all(v is None for v in others):
            raise ValueError("a rule needs a threshold: min, max, min_fraction_of + fraction, "
                             "max_drop or min_cka_to_baseline")
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
                if rule.kind not in kinds and rule.min_cka_to_baseline is None:
                    raise ValueError(f"rules[{index}] reads {rule.metric}, but the policy's "
                                     f"analyses do not run {rule.kind}")
        return self

    @property
    def needs_baseline(self) -> bool:
        return any(rule.max_drop is not None for rule in self.rules)

    @property
    def needs_baseline_model(self) -> bool:
        return any(rule.min_cka_to_baseline is not None for rule in self.rules)

    def job_analyses(self) -> list[dict[str, Any]] | None:
        """The analyses to run: the policy's, plus ``similarity`` when a rule compares with
        the baseline model and the policy does not list it (None: every kind)."""
        if self.analyses is None or not self.needs_baseline_model or any(
                entry.get("kind") == "similarity" for entry in self.analyses):
            return self.analyses
        return [*self.analyses, {"kind": "similarity"}]


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
