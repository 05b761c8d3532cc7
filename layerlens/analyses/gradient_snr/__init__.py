"""Gradient signal-to-noise ratio (Shwartz-Ziv & Tishby 2017): per weighted layer, how
consistent the loss gradient is from one mini-batch to the next.

High SNR: the mini-batches agree on where the weights should go (the "drift" phase of
training); low SNR: their gradients mostly cancel and the weights diffuse. Gradients
with respect to the weights in :mod:`.science`, figures in :mod:`.figures`, report glue in
:mod:`.run`.

For the series
--------------
Run on every checkpoint of a series, each section gives one value per weighted layer:
``dynamics.gradient_snr = {"layers": [weighted layers], "snr": [[per layer] per step],
"snr_norms": [[...]]}`` collects ``snr`` and ``snr_norms`` of the rows in order (null for
a skipped or failed layer). :func:`.figures.snr_over_epochs_figure` draws it, marking
per layer the drift-to-diffusion transition that :func:`.figures.transition_step` finds.
"""

from pathlib import Path

from layerlens.analyses.gradient_snr.spec import GradientSnrSection, GradientSnrSpec
from layerlens.analyses.kind import AnalysisKind

KIND = AnalysisKind(
    name="gradient_snr", title="Gradient signal-to-noise ratio",
    spec=GradientSnrSpec, section=GradientSnrSection,
    run=f"{__name__}.run:run", figures=f"{__name__}.figures",
    template=Path(__file__).with_name("template.html"))
