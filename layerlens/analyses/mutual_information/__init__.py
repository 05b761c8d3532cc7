"""Mutual information and the information plane (Shwartz-Ziv & Tishby 2017; Saxe et al. 2018;
Chelombiev et al. 2019). Estimators in :mod:`.estimators`, figure in :mod:`.figures`, report
glue in :mod:`.run`.
"""

from pathlib import Path

from layerlens.analyses.kind import AnalysisKind
from layerlens.analyses.mutual_information.spec import (
    MutualInformationSection,
    MutualInformationSpec,
)

KIND = AnalysisKind(
    name="mutual_information", title="Mutual information", spec=MutualInformationSpec,
    section=MutualInformationSection, run=f"{__name__}.run:run",
    figures=f"{__name__}.figures", template=Path(__file__).with_name("template.html"))
