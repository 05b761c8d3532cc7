"""Parts every analysis kind shares: the common spec keys and the rows of work not done.

torch-free.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A report model that refuses keys it does not declare (drift fails a test)."""

    model_config = ConfigDict(extra="forbid")


class SpecEntry(BaseModel):
    """Keys every analysis spec entry takes."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="the analysis kind; each kind's spec narrows it to its name")
    layers: list[str] | None = Field(default=None,
                                     description="layer names or glob patterns; default all")
    seed: int = Field(default=0, description="seeds every random choice of the analysis")


class SkippedLayer(Strict):
    """A layer the analysis does not apply to (say, a constant layer), and why."""

    layer: str
    skipped: str


class FailedLayer(Strict):
    """A layer whose computation raised; the other layers kept their results."""

    layer: str
    failed: str = Field(description="the error, in one line")


class FailedAnalysis(Strict):
    """An analysis that raised as a whole; the other analyses kept their results."""

    failed: str = Field(description="the error, in one line")
    error_type: str = Field(description="the exception's class, or 'invalid_input'")
