"""``layerlens analyze`` end to end, in-process: report.json, report.html, artifacts."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from layerlens.report import Report
from layerlens_client.cli import main


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _analyze(capsys, model, out: Path, *extra: str, dataset="builtin:digits"):
    """Capture and summarise only (an empty analyses spec), unless ``extra`` says otherwise."""
    if "--spec" not in extra and "--analyses" not in extra:
        no_analyses = out.parent / f"{out.name}-spec.json"
        no_analyses.write_text('{"analyses": []}')
        extra = (*extra, "--spec", str(no_analyses))
    code = main(["analyze", str(model), "--dataset", dataset, "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return Report.model_validate_json((out / "report.json").read_text()), captured.out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_report_lists_every_layer_with_real_statistics(capsys, cnn_files, tmp_path, fmt):
    report, stdout = _analyze(capsys, cnn_files[fmt], tmp_path)
    assert f"report: {(tmp_path / 'report.html').resolve()}" in stdout
    assert report.model.format == fmt and len(report.model.sha256) == 64
    assert report.model.input_shape == [1, 8, 8] and report.model.differentiable
    assert report.dataset.ref == "builtin:digits" and report.dataset.n_samples == 1797
    assert report.dataset.n_classes == 10
    assert len(report.model.layers) == 11
    assert [a.layer for a in report.activations.layers] == [m.name for m in report.model.layers]
    relu = next(a for m, a in zip(report.model.layers, report.activations.layers, strict=True)
                if m.op in ("ReLU", "Relu"))
    assert relu.mean > 0 and relu.std > 0 and 0 <= relu.dead_fraction < 1
    document = json.loads((tmp_path / "report.json").read_text())
    assert set(document) >= {"model", "dataset", "activations", "analyses"}
    assert all(a.reduction is None for a in report.activations.layers)  # fits the budget


def test_onnx_and_torchscript_reports_agree(capsys, cnn_files, tmp_path):
    onnx_report, _ = _analyze(capsys, cnn_files["onnx"], tmp_path / "onnx")
    ts_report, _ = _analyze(capsys, cnn_files["torchscript"], tmp_path / "ts")
    for a, b in zip(onnx_report.activations.layers, ts_report.activations.layers, strict=True):
        assert a.shape == b.shape
        assert a.mean == pytest.approx(b.mean, rel=1e-5, abs=1e-6)
        assert a.std == pytest.approx(b.std, rel=1e-5, abs=1e-6)
        assert a.dead_fraction == b.dead_fraction


def test_html_page_shows_every_layer_and_its_images_exist(capsys, cnn_files, tmp_path):
    report, _ = _analyze(capsys, cnn_files["torchscript"], tmp_path)
    html = (tmp_path / "report.html").read_text()
    parser = _Images()
    parser.feed(html)
    assert parser.sources == [report.activations.image]
    for source in parser.sources:
        assert (tmp_path / source).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for layer in report.model.layers:
        assert f"<code>{layer.name}</code>" in html
    assert "<script" not in html


def test_layer_selection_by_glob_and_sample_limit(capsys, cnn_files, tmp_path):
    report, _ = _analyze(capsys, cnn_files["onnx"], tmp_path, "--layers", "[1369],1?",
                         "--max-samples", "300")
    names = [a.layer for a in report.activations.layers]
    ops = {layer.name: layer.op for layer in report.model.layers}
    assert names == ["1", "3", "6", "9", "10"]  # module paths, in forward order
    assert [ops[name] for name in names] == ["Relu"] * 4 + ["Gemm"]
    assert report.dataset.n_samples == 300 and report.dataset.n_total == 1797
    assert report.activations.n_samples == 300


def test_memory_budget_reduction_is_reported(capsys, cnn_files, tmp_path):
    report, _ = _analyze(capsys, cnn_files["torchscript"], tmp_path, "--memory-budget", "2MB",
                         "--max-samples", "200")
    reduced = {a.layer: a.reduction for a in report.activations.layers if a.reduction}
    assert reduced, "a 2 MB budget cannot hold 200 samples of every layer"
    first = report.activations.layers[0]
    assert first.reduction is not None and first.reduction.method == "spatial_mean"
    assert first.reduction.from_shape == [16, 8, 8] and first.stored_features == 16
    assert "spatial mean" in (tmp_path / "report.html").read_text()


def test_npz_dataset_and_normalisation(capsys, cnn_files, digits, tmp_path):
    """Data saved at twice the scale, with --std 2, gives the original data's activations."""
    from layerlens.models import load_model

    path = tmp_path / "digits.npz"
    np.savez(path, x=digits.x[:100] * 2.0, y=digits.y[:100])
    report, _ = _analyze(capsys, cnn_files["onnx"], tmp_path, "--std", "2", dataset=str(path))
    assert report.dataset.ref == str(path) and report.dataset.n_samples == 100

    model = load_model(cnn_files["onnx"], device="cpu")
    first = model.layer_names[0]
    original = model.capture(digits.x[:100].reshape(-1, 1, 8, 8), [first])[first]
    assert report.activations.layers[0].mean == pytest.approx(float(original.mean()), rel=1e-5)
    assert report.activations.layers[0].std == pytest.approx(float(original.std()), rel=1e-4)


def test_invalid_spec_is_refused_before_any_work(capsys, cnn_files, tmp_path):
    code = main(["analyze", str(cnn_files["onnx"]), "--dataset", "builtin:digits",
                 "--analyses", "linear_probe,tsne", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "analyses[1].kind must be one of" in err
    assert not (tmp_path / "out").exists()
