"""``analyze_series``: the checkpoints of one training run -> a report with ``dynamics``.

Every checkpoint sees ONE dataset, ONE subsample (``options.max_samples``,
``options.seed``) and, since the probe's split is drawn from that subsample with the
spec's seed, ONE train/test split. Layers are matched by name: the layers every
checkpoint has (those ``options.layers`` selects), in the last checkpoint's forward
order. Each checkpoint is captured once, every analysis reuses that capture, and the
capture is dropped before the next checkpoint is loaded: memory holds one
checkpoint's activations, the per-step report sections and the previous step's
projection embeddings. ``analyses`` of the report describe the last checkpoint;
earlier checkpoints run only the analyses the dynamics read
(:data:`DYNAMICS_KINDS`), whose figures are not kept.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerlens.analyses.base import ArtifactWriter
from layerlens.analyses.filters.figures import afr_over_epochs_figure
from layerlens.analyses.gradient_snr.figures import snr_over_epochs_figure
from layerlens.analyses.mutual_information.dynamics import TOLERANCE_BITS
from layerlens.analyses.mutual_information.figures import information_plane_over_epochs_figure
from layerlens.analyze import atomic_write, report_from_capture
from layerlens.capture import capture_activations
from layerlens.data import Dataset, resolve_dataset
from layerlens.errors import InputError
from layerlens.models import load_model, select_layers
from layerlens.options import JobOptions
from layerlens.report import Report, write_html
from layerlens.report.schema import DynamicsSection, ProjectionDynamics, ProjectionPanels
from layerlens.series import dynamics as assemble
from layerlens.series import figures
from layerlens.series.projection import SeriesProjection
from layerlens.series.steps import checkpoint_steps
from layerlens.spec import default_spec

#: The kinds whose per-step sections the dynamics read (projection is run by the series
#: itself, chained from step to step).
DYNAMICS_KINDS = ("linear_probe", "mutual_information", "gradient_snr", "filters")

#: ``(checkpoint, checkpoints, stage, step, total, metrics) -> stop?``: checkpoint counts
#: from 0 in step order; stage is ``"capture"`` or an analysis kind.
SeriesProgress = Callable[[int, int, str, int, int, dict[str, float]], bool | None]

NOTE = ("Each checkpoint is analysed on the same samples with the same train/test split; "
        "layers are those every checkpoint has, matched by name. Each step's projection "
        "starts from the previous step's embedding (Rauber et al. 2017), so panels side by "
        "side are comparable. A layer is compressed when its I(X;T) falls by more than "
        "{tolerance:g} bits after its peak (Shwartz-Ziv & Tishby 2017).")


@dataclass(frozen=True)
class Checkpoint:
    """One model file of the series: its path, its step, and its name in messages."""

    path: Path
    step: int
    name: str


def checkpoints(model_paths: Sequence[str | Path], steps: Sequence[int] | None = None,
                names: Sequence[str] | None = None, *,
                steps_name: str = "steps") -> list[Checkpoint]:
    """The series in step order; steps from the file names (``names``, default the paths')
    unless given. Raises :class:`InputError` (see :func:`checkpoint_steps`)."""
    paths = [Path(path) for path in model_paths]
    shown = list(names) if names is not None else [path.name for path in paths]
    found = checkpoint_steps(shown, steps, steps_name=steps_name)
    return sorted((Checkpoint(path, step, name) for path, step, name
                   in zip(paths, found, shown, strict=True)), key=lambda c: c.step)


def analyze_series(series: Sequence[Checkpoint], dataset: str | Dataset, out_dir: str | Path,
                   options: JobOptions | None = None, *,
                   progress: SeriesProgress | None = None) -> Report:
    """Analyse every checkpoint of ``series`` (see :func:`checkpoints`) and write the report
    folder: ``report.json`` (``analyses`` of the last checkpoint, ``dynamics`` of the series),
    ``report.html`` and the artifacts. Raises :class:`InputError` when the checkpoints have
    no layer in common, or on the inputs :func:`layerlens.analyze.analyze` refuses."""
    options = options or JobOptions()
    if options.compare_to is not None:
        raise InputError("compare_to compares two models; a checkpoint series compares its "
                         "checkpoints: run it without compare_to", options=("compare_to",))
    if len(series) < 2:
        raise InputError(f"a checkpoint series needs at least 2 model files, got {len(series)}")
    spec = default_spec() if options.analyses is None else list(options.analyses)
    data = resolve_dataset(dataset) if isinstance(dataset, str) else dataset
    subset = data.subsample(options.max_samples, seed=options.seed)
    layers = _common_layers(series, data, options)
    projection_spec = next((entry for entry in spec if entry.kind == "projection"), None)
    projector = (None if projection_spec is None
                 else SeriesProjection(projection_spec, subset.y))  # type: ignore[arg-type]
    out = Path(out_dir)
    # activations over the budget's share wait on disk beside the report folder
    spill = next(folder for folder in out.resolve().parents if folder.is_dir())
    out.mkdir(parents=True, exist_ok=True)
    sections: list[dict[str, Any]] = []
    last_report: Report | None = None
    with tempfile.TemporaryDirectory(prefix="layerlens-series-") as scratch:
        for index, checkpoint in enumerate(series):
            last = index == len(series) - 1
            stage_progress = _stages(progress, index, len(series))
            model = _load(checkpoint, data, options)
            chosen = [info for info in model.layers if info.name in layers]
            activations = capture_activations(
                model, subset, layers=chosen, batch_size=options.batch_size,
                memory_budget=options.memory_budget, max_features=options.max_features,
                seed=options.seed, progress=_for_stage(stage_progress, "capture"),
                sequence_pooling=options.sequence_pooling, spill_folder=spill)
            steps_spec = spec if last else [e for e in spec if e.kind in DYNAMICS_KINDS]
            folder = out if last else Path(scratch)
            try:
                report = report_from_capture(model, data, subset, activations, steps_spec,
                                             folder, progress=stage_progress)
                sections.append(report.analyses)
                if projector is not None:
                    if stage_progress is not None and not last:  # last: after the kind's own
                        stage_progress("projection", 0, 1, {})
                    projector.add(activations, device=model.device)
            finally:
                activations.close()
            if last:
                last_report = report
            del activations, model
    assert last_report is not None
    dynamics = _dynamics(series, layers, sections, projector, ArtifactWriter(out))
    report = last_report.model_copy(update={"dynamics": dynamics})
    atomic_write(out / "report.json", report.model_dump_json(indent=2))
    write_html(report, out / "report.html")
    return report


def _load(checkpoint: Checkpoint, data: Dataset, options: JobOptions) -> Any:
    return load_model(checkpoint.path, input_shape=options.input_shape,
                      sample_shapes=data.sample_shapes, device=options.device,
                      mean=options.mean, std=options.std, name=checkpoint.name,
                      input_name=options.input_name, inputs=data.inputs)


def _common_layers(series: Sequence[Checkpoint], data: Dataset,
                   options: JobOptions) -> list[str]:
    """Names of the selected layers every checkpoint has, in the last one's forward order."""
    names: list[list[str]] = []
    for checkpoint in series:
        model = _load(checkpoint, data, options)
        names.append([info.name for info in select_layers(model.layers, options.layers)])
        del model
    common = [name for name in names[-1] if all(name in others for others in names[:-1])]
    if not common:
        first, last = series[0], series[-1]
        raise InputError(f"the checkpoints have no layer in common: '{first.name}' has "
                         f"{_some(names[0])}, '{last.name}' has {_some(names[-1])}; a series "
                         "is checkpoints of one network, whose layers keep their names")
    return common


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} layers ({shown})" if names else "no layers"


def _dynamics(series: Sequence[Checkpoint], layers: list[str],
              sections: list[dict[str, Any]], projector: SeriesProjection | None,
              artifacts: ArtifactWriter) -> DynamicsSection:
    """The ``dynamics`` section and its figures."""
    steps = [checkpoint.step for checkpoint in series]
    dynamics = DynamicsSection(
        steps=steps, checkpoints=[checkpoint.name for checkpoint in series], layers=layers,
        note=NOTE.format(tolerance=TOLERANCE_BITS))
    kinds = set(sections[-1])
    if "linear_probe" in kinds:
        probe = assemble.probe_dynamics([s.get("linear_probe") for s in sections], layers)
        probe.image = artifacts.png(figures.heatmap(
            steps, layers, probe.test_accuracy, title="Linear probe test accuracy",
            label="test accuracy"), "dynamics", "linear_probe")
        dynamics.linear_probe = probe
    if projector is not None:
        dynamics.projection = _projection(steps, layers, projector, artifacts)
    if "mutual_information" in kinds:
        last = sections[-1]["mutual_information"]
        info = assemble.information_dynamics([s.get("mutual_information") for s in sections],
                                             layers, steps)
        info.image = artifacts.png(information_plane_over_epochs_figure(
            steps, layers, info.I_XT, info.I_TY, log2_n=last.get("log2_N"),
            h_y=last.get("H_Y"), estimator=info.estimator), "dynamics", "information_plane")
        dynamics.mutual_information = info
    if "gradient_snr" in kinds:
        snr = assemble.snr_dynamics([s.get("gradient_snr") for s in sections])
        if snr is not None:
            snr.image = artifacts.png(snr_over_epochs_figure(steps, snr.layers, snr.snr),
                                      "dynamics", "gradient_snr")
        dynamics.gradient_snr = snr
    if "filters" in kinds:
        bank = assemble.filter_dynamics([s.get("filters") for s in sections])
        if bank is not None:
            bank.image = artifacts.png(afr_over_epochs_figure(steps, bank.frequencies, bank.afr),
                                       "dynamics", "filters")
        dynamics.filters = bank
    return dynamics


def _projection(steps: list[int], layers: list[str], projector: SeriesProjection,
                artifacts: ArtifactWriter) -> ProjectionDynamics:
    hits = projector.matrix(layers)
    section = ProjectionDynamics(method=projector.spec.method, neighborhood_hit=hits)
    section.image = artifacts.png(figures.heatmap(
        steps, layers, hits, title=f"Neighbourhood hit NH({projector.spec.k}) of the "
        f"{projector.spec.method} projections", label="neighbourhood hit"),
        "dynamics", "neighborhood_hit")
    for column, name in enumerate(layers):
        coordinates = [step.get(name) for step in projector.coordinates]
        if all(points is None for points in coordinates):
            continue
        figure = figures.projection_panels(steps, name, coordinates, projector.labels,
                                           [row[column] for row in hits])
        section.panels.append(ProjectionPanels(
            layer=name, image=artifacts.png(figure, "dynamics", "projection", name)))
    return section


def _stages(progress: SeriesProgress | None, index: int,
            total: int) -> Callable[[str, int, int, dict[str, float]], bool | None] | None:
    if progress is None:
        return None
    return lambda stage, step, steps, metrics: progress(index, total, stage, step, steps,
                                                        metrics)


def _for_stage(progress: Callable[[str, int, int, dict[str, float]], bool | None] | None,
               stage: str) -> Callable[[int, int, dict[str, float]], bool | None] | None:
    if progress is None:
        return None
    return lambda step, total, metrics: progress(stage, step, total, metrics)
