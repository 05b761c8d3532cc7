"""``analyze``: model file + dataset -> report folder. The CLI and the workers call this."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerlens import __version__
from layerlens.analyses.base import AnalysisContext, ArtifactWriter, Reference
from layerlens.analyses.registry import REGISTRY
from layerlens.analyses.sections import FailedAnalysis, FailedLayer
from layerlens.capture import Activations, ProgressCallback, capture_activations
from layerlens.data import Dataset, resolve_dataset
from layerlens.errors import InputError, is_allocation_failure, one_line
from layerlens.models import LayerInfo, ProbedModel, load_model, select_layers
from layerlens.options import JobOptions
from layerlens.report import Report, write_html
from layerlens.report.plots import activation_summary_png
from layerlens.report.schema import (
    ActivationLayer,
    ActivationsSection,
    DatasetSection,
    LayerEntry,
    LayerWithoutGradients,
    ModelSection,
    ReductionEntry,
    Warning_,
    validate_section,
)
from layerlens.spec import AnalysisSpec, default_spec

ACTIVATIONS_IMAGE = "activations.png"

#: ``(stage, step, total, metrics) -> stop?``; stage is ``"capture"`` or an analysis kind.
StageProgress = Callable[[str, int, int, dict[str, float]], bool | None]


def _model_section(model: ProbedModel) -> ModelSection:
    return ModelSection(
        sha256=model.sha256, format=model.format,
        input_shape=list(model.input_spec.shape),
        input_mean=None if model.input_spec.mean is None else list(model.input_spec.mean),
        input_std=None if model.input_spec.std is None else list(model.input_spec.std),
        differentiable=model.differentiable,
        gradient_note=model.gradient_error,
        layers_without_gradients=[
            LayerWithoutGradients(layer=name, reason=reason)
            for name, reason in model.layer_gradient_errors.items() if model.differentiable],
        layers=[LayerEntry(name=layer.name, op=layer.op, shape=list(layer.shape))
                for layer in model.layers],
    )


def _activations_section(activations: Activations) -> ActivationsSection:
    layers = []
    for captured in activations.layers.values():
        reduction = captured.reduction
        layers.append(ActivationLayer(
            layer=captured.info.name, shape=list(captured.info.shape),
            stored_features=int(captured.values.shape[1]),
            reduction=None if reduction is None else ReductionEntry(
                method=reduction.method, from_shape=list(reduction.from_shape),
                to=reduction.to, seed=reduction.seed),
            **captured.stats.summary(),
        ))
    return ActivationsSection(n_samples=activations.n_samples,
                              batch_size=activations.batch_size,
                              image=ACTIVATIONS_IMAGE, layers=layers)


def analyze(model_path: str | Path, dataset: str | Dataset, out_dir: str | Path,
            options: JobOptions | None = None, *,
            progress: StageProgress | None = None, model_name: str | None = None) -> Report:
    """Capture every selected layer over the dataset and write the report folder.

    Writes ``report.json``, ``report.html`` and the PNG artifacts into
    ``out_dir`` (created if needed) and returns the report. ``progress`` hears
    of every capture batch and every step of every analysis, stage by stage.
    ``model_name`` is how messages name the model file (default its file name).
    ``options.compare_to`` names a second model file: it is captured on the same samples
    and given to the analyses as ``ctx.reference`` (the similarity analysis compares them).
    """
    options = options or JobOptions()
    spec = default_spec() if options.analyses is None else list(options.analyses)
    data = resolve_dataset(dataset) if isinstance(dataset, str) else dataset
    model = load_model(model_path, input_shape=options.input_shape,
                       sample_shapes=data.sample_shapes, device=options.device,
                       mean=options.mean, std=options.std, name=model_name,
                       input_name=options.input_name, inputs=data.inputs)
    chosen = select_layers(model.layers, options.layers)
    other = None if options.compare_to is None else _reference_model(options, data)
    subset = data.subsample(options.max_samples, seed=options.seed)
    out = Path(out_dir)
    # activations over the budget's share wait on disk beside the report folder
    spill = next(folder for folder in out.resolve().parents if folder.is_dir())
    activations = capture_activations(
        model, subset, layers=chosen, batch_size=options.batch_size,
        memory_budget=options.memory_budget, max_features=options.max_features,
        seed=options.seed, progress=_for_stage(progress, "capture"),
        sequence_pooling=options.sequence_pooling, spill_folder=spill)
    reference = None if other is None else Reference(
        other[0], other[1], capture_activations(
            other[1], subset, layers=other[2], batch_size=options.batch_size,
            memory_budget=options.memory_budget, max_features=options.max_features,
            seed=options.seed, progress=_for_stage(progress, "capture"),
            sequence_pooling=options.sequence_pooling, spill_folder=spill))
    try:
        out.mkdir(parents=True, exist_ok=True)
        report = report_from_capture(model, data, subset, activations, spec, out,
                                     progress=progress, reference=reference)
    finally:
        activations.close()
        if reference is not None:
            reference.activations.close()
    atomic_write(out / "report.json", report.model_dump_json(indent=2))
    write_html(report, out / "report.html")
    return report


def report_from_capture(model: ProbedModel, data: Dataset, subset: Dataset,
                        activations: Activations, spec: list[AnalysisSpec], out: Path, *,
                        progress: StageProgress | None = None,
                        reference: Reference | None = None) -> Report:
    """Every analysis of ``spec`` on ONE capture of ``model`` over ``subset`` (drawn from
    ``data``); their artifacts are written into ``out``, the report is returned unwritten.
    :func:`analyze` and :func:`layerlens.series.analyze_series` (once per checkpoint) call it."""
    sections: dict[str, Any] = {}
    warnings: list[Warning_] = []
    for entry in spec:
        context = AnalysisContext(model, subset, activations, ArtifactWriter(out),
                                  device=model.device,
                                  progress=_for_stage(progress, entry.kind),
                                  reference=reference)
        context.report_progress(0, 1)
        sections[entry.kind] = _run_one(entry, context)
        warnings += _warnings(entry.kind, sections[entry.kind])
    section = _activations_section(activations)
    ops = {layer.name: layer.op for layer in model.layers}
    activation_summary_png(section.layers, ops, out / ACTIVATIONS_IMAGE)
    return Report(
        layerlens_version=__version__,
        model=_model_section(model),
        dataset=DatasetSection(ref=data.ref, n_samples=subset.n_samples,
                               n_classes=data.n_classes, n_total=data.n_samples),
        activations=section,
        analyses=sections,
        warnings=warnings,
    )


def _reference_model(options: JobOptions, data: Dataset
                     ) -> tuple[str, ProbedModel, list[LayerInfo]]:
    """The ``compare_to`` model, loaded as this one (same input options), and its layers
    ``options.layers`` selects: ``(name, model, layers)``. Raises :class:`InputError` naming
    ``compare_to`` when the model cannot be used."""
    path = Path(str(options.compare_to))
    try:
        other = load_model(path, input_shape=options.input_shape,
                           sample_shapes=data.sample_shapes, device=options.device,
                           mean=options.mean, std=options.std,
                           input_name=options.input_name, inputs=data.inputs)
        return path.name, other, select_layers(other.layers, options.layers)
    except InputError as exc:
        raise InputError(f"compare_to: {exc}", options=("compare_to", *exc.options)) from exc


def _run_one(entry: AnalysisSpec, context: AnalysisContext) -> dict[str, Any]:
    """One analysis's section, or a :class:`FailedAnalysis` when it raised: the other
    analyses keep their results. Running out of memory still ends the run."""
    try:
        return validate_section(entry.kind, REGISTRY[entry.kind].runner()(entry, context))
    except Exception as exc:
        if is_allocation_failure(exc):
            raise
        error_type = "invalid_input" if isinstance(exc, InputError) else type(exc).__name__
        failed = FailedAnalysis(failed=one_line(exc), error_type=error_type)
        return failed.model_dump(mode="json")


def _warnings(kind: str, section: dict[str, Any]) -> list[Warning_]:
    if "failed" in section:
        return [Warning_(analysis=kind, message=section["failed"])]
    rows = section.get("layers", [])
    return [Warning_(analysis=kind, layer=row["layer"], message=row["failed"])
            for row in rows if isinstance(row, dict) and set(row) == set(FailedLayer.model_fields)]


def _for_stage(progress: StageProgress | None, stage: str) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda step, total, metrics: progress(stage, step, total, metrics)


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file so a crash never leaves half a report."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
