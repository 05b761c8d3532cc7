"""Layers of width 2, 1 and scalar layers ``()``: every analysis either runs on them or skips
them with its reason; nothing fails or crashes (a binary head has one logit)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layerlens.analyze import analyze
from layerlens.options import JobOptions
from tests.nets import save_scripted


class _Sum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)


class _Narrow(nn.Module):
    """30 -> 2 -> tanh (2) -> 1 logit -> its sum over the one unit: a scalar per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.two, self.act = nn.Linear(30, 2), nn.Tanh()
        self.one, self.scalar = nn.Linear(2, 1), _Sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scalar(self.one(self.act(self.two(x))))


WIDTHS = {"two": (2,), "act": (2,), "one": (1,), "scalar": ()}


@pytest.fixture(scope="module")
def narrow_model(tmp_path_factory):
    torch.manual_seed(0)
    return save_scripted(_Narrow(), tmp_path_factory.mktemp("narrow") / "narrow.pt")


def _run(model, tmp_path, entry: dict) -> dict[str, dict]:
    report = analyze(model, "builtin:breast_cancer", tmp_path, JobOptions(
        max_samples=150, input_shape=[30], analyses=[entry]))
    assert [layer.shape for layer in report.model.layers] == [list(s) for s in WIDTHS.values()]
    rows = report.analyses[entry["kind"]]["layers"]
    assert [row["layer"] for row in rows] == list(WIDTHS)
    assert not report.warnings and "failed" not in report.analyses[entry["kind"]]
    return {row["layer"]: row for row in rows}


def test_probes_fit_every_width(narrow_model, tmp_path):
    rows = _run(narrow_model, tmp_path, {"kind": "linear_probe"})
    assert [rows[name]["n_features"] for name in WIDTHS] == [2, 2, 1, 1]
    assert all(0.5 <= row["test_accuracy"] <= 1.0 for row in rows.values())


@pytest.mark.parametrize("method", ["tsne", "pca",
                                    pytest.param("umap", marks=pytest.mark.slow)])
def test_projection_draws_one_feature_by_pca(narrow_model, tmp_path, method):
    rows = _run(narrow_model, tmp_path, {"kind": "projection", "method": method})
    for name in ("two", "act"):
        assert rows[name]["method"] == method and rows[name]["note"] is None
    for name in ("one", "scalar"):
        assert rows[name]["method"] == "pca" and "one feature" in rows[name]["note"]
    assert all(0.0 <= row["neighborhood_hit"] <= 1.0 for row in rows.values())


@pytest.mark.parametrize("estimator", ["binning", "adaptive", "kde", "ksg"])
def test_mutual_information_on_every_width(narrow_model, tmp_path, estimator):
    rows = _run(narrow_model, tmp_path, {"kind": "mutual_information",
                                            "estimator": estimator})
    for name, row in rows.items():
        assert row["n_features"] == max(1, math.prod(WIDTHS[name]))
        assert 0.0 <= row["I_TY"] <= 1.0 and not row["constant"]
        if estimator == "ksg":
            assert row["I_XT"] is None
        elif estimator == "kde":
            assert row["I_XT"] > 0
        else:  # plug-in entropies: I(T;Y) <= I(X;T) exactly
            assert row["I_XT"] >= row["I_TY"]


def test_activation_maximization_skips_what_is_too_narrow(narrow_model, tmp_path):
    rows = _run(narrow_model, tmp_path, {"kind": "activation_maximization", "steps": 8})
    assert sorted(unit["unit"] for unit in rows["two"]["units"]) == [0, 1]
    assert [unit["unit"] for unit in rows["one"]["units"]] == [0]
    assert "scalar layer" in rows["scalar"]["skipped"]
    rows = _run(narrow_model, tmp_path, {"kind": "activation_maximization", "steps": 8,
                                            "units": [0, 1]})
    assert [unit["unit"] for unit in rows["act"]["units"]] == [0, 1]
    assert rows["one"]["skipped"] == "too narrow for units: it has units 0..0, units asks for 1"
    assert "scalar layer" in rows["scalar"]["skipped"]
