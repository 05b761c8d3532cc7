"""The registry of analysis kinds: a kind lacking a part fails when it is made, and a kind
registered from this file alone reaches the spec, OpenAPI, the report schema and the HTML."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from layerlens.analyses import REGISTRY, AnalysisKind, KindError
from layerlens.analyses.base import AnalysisContext
from layerlens.analyses.sections import SpecEntry, Strict
from layerlens.analyze import analyze
from layerlens.data import Dataset
from layerlens.options import JobOptions, job_options_model
from layerlens.report.schema import report_model
from layerlens.spec import kinds, parse_spec
from tests.nets import save_scripted

ROOT = Path(__file__).resolve().parents[2]
TOY_TEMPLATE = ('<h2 id="toy_mean">Toy mean</h2><p class="toy">layers averaged: '
                '{{ section.layers | length }}; first mean {{ section.layers[0].mean }}</p>')


class ToySpec(SpecEntry):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["toy_mean"]
    scale: float = 1.0


class ToyRow(Strict):
    layer: str
    mean: float


class ToySection(Strict):
    scale: float
    layers: list[ToyRow]


def toy_run(spec: ToySpec, ctx: AnalysisContext) -> ToySection:
    """Each layer's mean activation times ``scale``."""
    return ToySection(scale=spec.scale, layers=[
        ToyRow(layer=layer.info.name, mean=float(layer.values.mean()) * spec.scale)
        for layer in ctx.layers(spec.layers)])


def toy_kind(template: Path, **changes: object) -> AnalysisKind:
    parts: dict[str, object] = {
        "name": "toy_mean", "title": "Toy mean", "spec": ToySpec, "section": ToySection,
        "run": f"{__name__}:toy_run", "figures": __name__, "template": template}
    parts.update(changes)
    return AnalysisKind(**parts)  # type: ignore[arg-type]


def register_toy(folder: Path) -> AnalysisKind:
    """Write the toy's template into ``folder`` and register the kind (also used by the
    subprocess below)."""
    template = folder / "toy_mean.html"
    template.write_text(TOY_TEMPLATE, encoding="utf-8")
    return REGISTRY.register(toy_kind(template))


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[AnalysisKind]:
    kind = register_toy(tmp_path)
    yield kind
    REGISTRY.unregister(kind.name)


def test_builtin_kinds_are_registered_in_report_order():
    assert kinds()[:4] == ("linear_probe", "projection", "mutual_information",
                           "activation_maximization")
    for kind in REGISTRY:
        assert kind.template.is_file() and callable(kind.runner())


@pytest.mark.parametrize(("change", "complaint"), [
    ({"template": Path("/nonexistent/toy.html")}, "template"),
    ({"run": "tests.analyses.no_such_module:run"}, "run module"),
    ({"run": f"{__name__}.toy_run"}, "module:function"),
    ({"figures": "tests.analyses.no_such_figures"}, "figures module"),
    ({"spec": Strict}, "kind: Literal['toy_mean']"),
    ({"section": dict}, "section must be a pydantic model"),
    ({"name": "toy-mean"}, "identifier"),
])
def test_a_kind_lacking_a_part_fails_when_it_is_made(tmp_path, change, complaint):
    template = tmp_path / "toy.html"
    template.write_text("x")
    parts = {"template": template, **change}
    with pytest.raises(KindError, match=re.escape(complaint)):
        toy_kind(**parts)


def test_a_spec_that_takes_unknown_keys_is_refused(tmp_path):
    class Lax(BaseModel):
        kind: Literal["toy_mean"]

    template = tmp_path / "toy.html"
    template.write_text("x")
    with pytest.raises(KindError, match="forbid unknown keys"):
        toy_kind(template, spec=Lax)


def test_a_second_kind_of_the_same_name_is_refused(toy, tmp_path):
    with pytest.raises(KindError, match="registered already"):
        REGISTRY.register(toy_kind(toy.template, title="Another"))


def test_a_registered_kind_reaches_spec_options_report_schema_and_html(toy, tmp_path):
    assert "toy_mean" in kinds()
    (entry,) = parse_spec([{"kind": "toy_mean", "scale": 2.0}])
    assert isinstance(entry, ToySpec) and entry.scale == 2.0
    options_schema = json.dumps(job_options_model().model_json_schema())
    assert "ToySpec" in options_schema and '"toy_mean"' in options_schema
    report_schema = report_model().model_json_schema()
    assert report_schema["$defs"]["Analyses"]["properties"]["toy_mean"]["title"] == "Toy mean"
    assert "ToySection" in report_schema["$defs"]

    torch.manual_seed(0)
    model = save_scripted(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), tmp_path / "m.pt")
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    data = Dataset.from_arrays("test:toy", x, np.arange(40) % 2)
    options = JobOptions(analyses=[{"kind": "toy_mean", "scale": 2.0}], input_shape=[4])
    report = analyze(model, data, tmp_path / "out", options)
    section = report.section("toy_mean")
    assert isinstance(section, ToySection) and section.scale == 2.0
    assert [row.layer for row in section.layers] == ["0", "1"]
    relu_mean = float(np.maximum(x @ _weights(model).T + _bias(model), 0).mean()) * 2.0
    assert section.layers[1].mean == pytest.approx(relu_mean, rel=1e-5)
    page = (tmp_path / "out" / "report.html").read_text()
    assert '<p class="toy">layers averaged: 2;' in page and 'href="#toy_mean"' in page


def _weights(path: Path) -> np.ndarray:
    return torch.jit.load(str(path)).state_dict()["0.weight"].numpy()


def _bias(path: Path) -> np.ndarray:
    return torch.jit.load(str(path)).state_dict()["0.bias"].numpy()


def test_a_kind_registered_before_the_api_is_built_is_in_openapi(tmp_path):
    """The body of POST /v1/jobs is built from the registry when the service is imported:
    a fresh process registers the toy, then builds the app and reads its OpenAPI."""
    script = f"""
import json, sys
from pathlib import Path
from tests.analyses.test_registry import register_toy
register_toy(Path({str(tmp_path)!r}))
from infra.db.session import upgrade
from service.app import create_app
from tests.service.support import embedded_settings
settings = embedded_settings(Path({str(tmp_path)!r}))
upgrade(settings.database_url)
schema = create_app(settings).openapi()
body = schema["components"]["schemas"]
print(json.dumps({{"job": json.dumps(body["JobCreate"]), "toy": body.get("ToySpec")}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "ToySpec" in found["job"]
    assert found["toy"]["properties"]["scale"]["default"] == 1.0
    assert found["toy"]["properties"]["kind"]["const"] == "toy_mean"
