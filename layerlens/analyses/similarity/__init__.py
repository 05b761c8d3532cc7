"""Representation similarity (Kornblith et al. 2019): linear CKA, biased or debiased, between
every pair of layers of one model, or of two models on the same samples. Science in
:mod:`.science`, figure in :mod:`.figures`, report glue in :mod:`.run`.
"""

from pathlib import Path

from layerlens.analyses.kind import AnalysisKind
from layerlens.analyses.similarity.spec import SimilaritySection, SimilaritySpec

KIND = AnalysisKind(
    name="similarity", title="Representation similarity", spec=SimilaritySpec,
    section=SimilaritySection, run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
