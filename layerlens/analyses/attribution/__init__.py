"""Attribution (Simonyan et al. 2014; Shrikumar et al. 2016; Sundararajan et al. 2017): which
input features drive the model's output, for a few examples per class. Gradients and
integrated gradients in :mod:`.science`, figures in :mod:`.figures`, report glue in
:mod:`.run`.
"""

from pathlib import Path

from layerlens.analyses.attribution.spec import AttributionSection, AttributionSpec
from layerlens.analyses.kind import AnalysisKind

KIND = AnalysisKind(
    name="attribution", title="Attribution",
    spec=AttributionSpec, section=AttributionSection,
    run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
