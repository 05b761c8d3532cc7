"""Activation maximisation (Erhan et al. 2009; Olah et al. 2017): the input that most excites a
unit, beside the data's strongest example. Optimisation in :mod:`.science` and
:mod:`.parametrization`, figures in :mod:`.figures`, report glue in :mod:`.run`.
"""

from pathlib import Path

from layerlens.analyses.activation_maximization.spec import (
    ActivationMaximizationSection,
    ActivationMaximizationSpec,
)
from layerlens.analyses.kind import AnalysisKind

KIND = AnalysisKind(
    name="activation_maximization", title="Activation maximisation",
    spec=ActivationMaximizationSpec, section=ActivationMaximizationSection,
    run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
