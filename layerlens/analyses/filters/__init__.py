"""First-layer filters (Loweimi et al. 2019): the weights of the first convolution drawn as
images (2-D) or curves (1-D), and their average frequency response. Spectra in
:mod:`.science`, figures in :mod:`.figures`, report glue in :mod:`.run`.

For the series
--------------
Run on every checkpoint of a series, each section gives the average frequency response
of the same layer on the same grid: ``dynamics.filters = {"layer", "frequencies": [...],
"afr": [[per frequency] per step]}`` collects ``frequencies`` once and ``afr`` per step
(for a 2-D convolution, the radial profile). :func:`.figures.afr_over_epochs_figure` draws
it, one curve per step coloured by step, so the sub-bands training amplifies or suppresses
show as curves that rise or sink.
"""

from pathlib import Path

from layerlens.analyses.filters.spec import FiltersSection, FiltersSpec
from layerlens.analyses.kind import AnalysisKind

KIND = AnalysisKind(
    name="filters", title="First-layer filters",
    spec=FiltersSpec, section=FiltersSection,
    run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
