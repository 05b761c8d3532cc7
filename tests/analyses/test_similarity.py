"""Linear CKA and debiased CKA: closed-form answers, the guards, the batched and grouped
computation against plain numpy, and the same network as ONNX and TorchScript."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from layerlens.analyses.similarity.figures import heatmap_figure, short_label, thinned_ticks
from layerlens.analyses.similarity.science import (
    CONSTANT,
    NOT_FINITE,
    centred_gram,
    cka_matrix,
    unbiased_centre,
)
from layerlens.analyze import analyze
from layerlens.errors import InputError
from layerlens.options import JobOptions
from layerlens.report.plots import plt
from layerlens_client.cli import main


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Biased linear CKA in the feature space (Kornblith et al. 2019, eq. 4): no Gram."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _song_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """The unbiased HSIC estimator exactly as Song et al. (2012, eq. 5) write it."""
    n = len(k)
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    value = (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
             - 2.0 / (n - 2) * (one @ k @ l @ one))
    return float(value / (n * (n - 3)))


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_one_for_the_same_layer_rotated_and_scaled(rng, debiased):
    x = rng.standard_normal((300, 40))
    rotated = 3.0 * x @ _orthogonal(rng, 40, 40)
    wider = x @ _orthogonal(rng, 64, 40).T  # an isometry into 64 dimensions
    result = cka_matrix([x], [x, rotated, wider, x + 5.0], debiased=debiased)
    np.testing.assert_allclose(result.matrix, 1.0, rtol=0, atol=1e-6)
    assert result.complete and not result.undefined_rows and not result.undefined_cols


def test_biased_cka_matches_the_feature_space_formula(rng):
    layers = [rng.standard_normal((150, d)) @ rng.standard_normal((d, d)) for d in (3, 20, 70)]
    layers.append(np.tanh(layers[1] @ rng.standard_normal((20, 9))))
    result = cka_matrix(layers)
    expected = [[_reference_cka(a, b) for b in layers] for a in layers]
    np.testing.assert_allclose(result.matrix, expected, rtol=1e-10, atol=0)


def test_unbiased_centring_gives_the_unbiased_hsic_of_song_et_al(rng):
    x = rng.standard_normal((60, 7))
    y = x @ rng.standard_normal((7, 4)) + rng.standard_normal((60, 4))
    k, l = x @ x.T, y @ y.T  # noqa: E741 (uncentred: U-centring ignores the mean)
    u_k = unbiased_centre(torch.tensor(k)).numpy()  # a copy: it centres in place
    u_l = unbiased_centre(torch.tensor(l)).numpy()
    assert float((u_k * u_l).sum() / (60 * 57)) == pytest.approx(
        _song_unbiased_hsic(k, l), rel=1e-10)


def test_debiased_cka_of_independent_data_is_near_zero_where_plain_cka_is_not():
    # N = 1000 samples, D = 512 features each, independent Gaussian (seed 0): measured
    # plain CKA 0.3399, debiased CKA 0.0014 (Kornblith et al. 2019, Fig. C.1: about 0.3
    # and 0). The bias of plain CKA grows with D / N; the unbiased HSIC removes it.
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((1000, 512)), rng.standard_normal((1000, 512))
    plain = cka_matrix([x], [y]).matrix[0, 0]
    debiased = cka_matrix([x], [y], debiased=True).matrix[0, 0]
    assert 0.25 < plain < 0.4
    assert np.isfinite(debiased) and abs(debiased) < 0.01


@pytest.mark.parametrize("debiased", [False, True])
def test_a_constant_layer_has_no_cka_and_says_why(rng, debiased):
    x = rng.standard_normal((50, 6)).astype(np.float32)
    constant = np.full((50, 4), 2.5, dtype=np.float32)
    broken = x.copy()
    broken[3, 1] = np.nan
    result = cka_matrix([x, constant, np.zeros((50, 3)), broken], debiased=debiased)
    assert result.undefined_rows == {1: CONSTANT, 2: CONSTANT, 3: NOT_FINITE}
    assert np.isnan(result.matrix[1:, :]).all() and np.isnan(result.matrix[:, 1:]).all()
    assert result.matrix[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_debiased_cka_is_never_nan_at_the_fewest_samples(rng):
    # at n = 4 U-centring leaves little: the unbiased HSIC of a layer with itself may be 0
    layers = [rng.standard_normal((4, 1)) @ rng.standard_normal((1, 5)),
              rng.standard_normal((4, 3)), np.arange(4.0)[:, None] ** 2]
    result = cka_matrix(layers, debiased=True)
    defined = [i for i in range(3) if i not in result.undefined_rows]
    assert defined and np.isfinite(result.matrix[np.ix_(defined, defined)]).all()
    assert np.all(np.abs(result.matrix[np.ix_(defined, defined)]) <= 1.0)
    with pytest.raises(InputError, match="at least 4 samples"):
        cka_matrix([np.ones((3, 2))], debiased=True)


def test_gram_by_column_slices_equals_the_one_shot_gram(rng):
    x = (rng.standard_normal((120, 1000)) * 10.0 + 3.0).astype(np.float32)
    one_shot = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    expected = one_shot @ one_shot.T
    sliced, sum_squares = centred_gram(x, slice_bytes=8 * 120 * 7)  # slices of 7 columns
    error = np.abs(sliced.numpy() - expected).max() / np.abs(expected).max()
    assert error < 1e-10
    assert sum_squares == pytest.approx(float(np.square(x.astype(np.float64)).sum()), rel=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_groups_under_a_small_budget_give_the_one_pass_matrix(rng, symmetric):
    rows = [rng.standard_normal((40, d)) for d in (3, 8, 1, 20, 5)]
    cols = None if symmetric else [rng.standard_normal((40, d)) for d in (2, 9, 4)]
    one_pass = cka_matrix(rows, cols, debiased=True)
    steps: list[tuple[int, int]] = []
    grouped = cka_matrix(rows, cols, debiased=True, budget_bytes=3 * 8 * 40 * 40,
                         progress=lambda step, total, metrics: steps.append((step, total)))
    np.testing.assert_allclose(grouped.matrix, one_pass.matrix, rtol=1e-12, atol=1e-14)
    assert steps[-1][0] == steps[-1][1] > (5 if symmetric else 8)  # Grams were recomputed
    with pytest.raises(InputError, match="max_samples"):
        cka_matrix(rows, cols, budget_bytes=8 * 40 * 40)


def test_a_stop_keeps_the_pairs_computed(rng):
    rows = [rng.standard_normal((30, 4)) for _ in range(4)]
    # two Grams at a time: layer 0 with 0, with 1 (its Gram the 2nd), stopped at the 3rd
    result = cka_matrix(rows, budget_bytes=2 * 8 * 30 * 30,
                        progress=lambda step, total, metrics: step >= 3)
    assert not result.complete
    computed = np.zeros((4, 4), dtype=bool)
    computed[0, :2] = computed[:2, 0] = True
    assert (np.isfinite(result.matrix) == computed).all()
    assert result.matrix[0, 0] == pytest.approx(1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_matrix(rng):
    rows = [rng.standard_normal((500, d)).astype(np.float32) for d in (16, 300, 2048)]
    for debiased in (False, True):
        cpu = cka_matrix(rows, debiased=debiased)
        cuda = cka_matrix(rows, debiased=debiased, device="cuda")
        np.testing.assert_allclose(cuda.matrix, cpu.matrix, rtol=1e-10, atol=1e-12)


def test_labels_are_thinned_and_shortened_for_many_layers():
    names = [f"encoder.layers.{i}.attention.output.dense" for i in range(100)]
    positions, labels = thinned_ticks(names)
    assert len(positions) <= 41 and positions[0] == 0 and positions[-1] == 99
    assert all(len(label) <= len("99: ") + 32 for label in labels)
    assert short_label("a" * 10) == "a" * 10 and "…" in short_label(names[5])
    matrix = np.eye(100)
    matrix[3, :] = np.nan
    figure = heatmap_figure(matrix, names, names, row_title="rows", col_title="cols",
                            value_label="linear CKA", title="t")
    assert len(figure.axes[0].get_yticklabels()) == len(positions)
    plt.close(figure)


def test_onnx_and_torchscript_of_one_network_match_layer_for_layer(cnn_files, digits,
                                                                   tmp_path):
    options = JobOptions(analyses=[{"kind": "similarity"}], max_samples=300, device="cpu",
                         compare_to=str(cnn_files["torchscript"]))
    report = analyze(cnn_files["onnx"], digits, tmp_path, options)
    section = report.analyses["similarity"]
    assert section["compared_to"]["format"] == "torchscript"
    assert len(section["best_matches"]) == len(section["layers_a"]) == len(report.model.layers)
    assert min(match["cka"] for match in section["best_matches"]) >= 0.999
    assert section["specific_from"] is None and section["n_samples"] == 300
    assert (tmp_path / section["image"]).is_file()
    assert "best match in cnn.pt" in (tmp_path / "report.html").read_text()

    alone = analyze(cnn_files["onnx"], digits, tmp_path / "alone", JobOptions(
        analyses=[{"kind": "similarity", "debiased": True}], max_samples=200, device="cpu"))
    matrix = np.array(alone.analyses["similarity"]["matrix"], dtype=float)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    assert alone.analyses["similarity"]["best_matches"] is None


def test_a_damaged_copy_is_specific_from_its_first_layer(cnn_files, digits, trained_cnn,
                                                         tmp_path):
    from app.demo.model import export_torchscript

    damaged = copy.deepcopy(trained_cnn)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in damaged.parameters():
            parameter.copy_(torch.randn_like(parameter))
    path = export_torchscript(damaged, tmp_path / "random.pt")
    options = JobOptions(analyses=[{"kind": "similarity", "threshold": 0.95}], max_samples=300,
                         device="cpu", compare_to=str(path))
    section = analyze(cnn_files["torchscript"], digits, tmp_path / "out",
                      options).analyses["similarity"]
    cka = [match["cka"] for match in section["best_matches"]]
    below = [match["layer"] for match in section["best_matches"] if match["cka"] < 0.95]
    assert below and section["specific_from"] == below[0] and min(cka) < 0.95


def test_compare_to_needs_the_similarity_analysis_and_a_readable_model(cnn_files, digits,
                                                                      tmp_path):
    with pytest.raises(InputError, match="compare_to: only the similarity analysis compares"):
        JobOptions.parse({"analyses": [{"kind": "linear_probe"}], "compare_to": "other.onnx"})
    options = JobOptions(analyses=[{"kind": "similarity"}], compare_to=str(tmp_path / "no.onnx"))
    missing = re.escape("compare_to: model file 'no.onnx' does not exist")
    with pytest.raises(InputError, match=missing):
        analyze(cnn_files["onnx"], digits, tmp_path, options)
    with pytest.raises(InputError, match="unknown key 'metric'"):
        JobOptions.parse({"analyses": [{"kind": "similarity", "metric": "cka"}]})


@pytest.mark.slow  # two child processes, each importing torch: about 30 s on 2 busy cores
def test_the_command_line_compares_two_files(capsys, cnn_files, tmp_path):
    command = ["analyze", str(cnn_files["onnx"]), "--dataset", "builtin:digits", "--analyses",
               "similarity", "--max-samples", "200", "--device", "cpu", "--out"]
    code = main([*command, str(tmp_path / "out"), "--compare-to", str(cnn_files["torchscript"])])
    assert code == 0, capsys.readouterr().err
    section = json.loads((tmp_path / "out" / "report.json").read_text())["analyses"]["similarity"]
    assert section["compared_to"]["name"] == "cnn.pt"
    capsys.readouterr()
    code = main([*command, str(tmp_path / "bad"), "--compare-to", str(tmp_path / "missing.pt")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "layerlens: error: --compare-to: model file 'missing.pt' does not exist"]
