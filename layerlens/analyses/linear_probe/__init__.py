"""Linear classifier probes (Alain & Bengio 2016): how linearly decodable the labels are at
each layer. Science in :mod:`.science`, figure in :mod:`.figures`, report glue in :mod:`.run`.
"""

from pathlib import Path

from layerlens.analyses.kind import AnalysisKind
from layerlens.analyses.linear_probe.spec import LinearProbeSection, LinearProbeSpec

KIND = AnalysisKind(
    name="linear_probe", title="Linear probes", spec=LinearProbeSpec,
    section=LinearProbeSection, run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
