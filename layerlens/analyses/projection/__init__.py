"""Layer projections (Rauber et al. 2017): each layer's activations drawn in 2-D (t-SNE, PCA or
UMAP), scored by neighbourhood hit and trustworthiness. Science in :mod:`.science` and
:mod:`.neighborhood`, figure in :mod:`.figures`, report glue in :mod:`.run`.
"""

from pathlib import Path

from layerlens.analyses.kind import AnalysisKind
from layerlens.analyses.projection.spec import ProjectionSection, ProjectionSpec

KIND = AnalysisKind(
    name="projection", title="Projections", spec=ProjectionSpec, section=ProjectionSection,
    run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
