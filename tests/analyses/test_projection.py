"""Layer projections (Rauber et al. 2017): neighbourhood hit, trustworthiness, report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness as sklearn_trustworthiness
from torch import nn

from layerlens.analyses.base import AnalysisContext, ArtifactWriter
from layerlens.analyses.projection.neighborhood import (
    neighborhood_hit,
    projection_neighbors,
    trustworthiness,
)
from layerlens.analyses.projection.run import run
from layerlens.analyses.projection.science import pca_embedding, project_layer, tsne_embedding
from layerlens.analyses.projection.spec import ProjectionSpec
from layerlens.analyze import analyze
from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.data.dataset import stratified_subsample
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens.options import JobOptions
from layerlens.spec import parse_spec
from tests.nets import save_scripted


def _run(spec, ctx) -> dict:
    """The section as the report holds it (JSON data)."""
    return run(spec, ctx).model_dump(mode="json")


def _blobs(n_per_class: int = 50, n_classes: int = 4, dim: int = 10, spread: float = 100.0,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance Gaussian blobs whose centres are ``spread`` apart along the axes."""
    rng = np.random.default_rng(seed)
    centres = spread * np.eye(n_classes, dim)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centres[y] + rng.standard_normal((len(y), dim)), y


# --- neighbourhood hit ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pca", "tsne", pytest.param("umap", marks=pytest.mark.slow)])
def test_separated_blobs_have_neighbourhood_hit_one(method):
    """60-D blobs 100 sigma apart: NH = 1.0 exactly; t-SNE/UMAP run on 50 PCs (60 > 50)."""
    x, y = _blobs(dim=60)
    result = project_layer(x, y, method=method, k=6, seed=0)
    assert result.coordinates.shape == (len(y), 2)
    assert result.coordinates.dtype == np.float32
    assert result.neighborhood_hit == 1.0  # exact: every neighbourhood is pure
    assert result.trustworthiness > 0.9   # blobs stay blobs (loose; not the point here)
    assert result.pca_preprocessing == (None if method == "pca" else 50)
    if method == "tsne":
        assert result.parameters == {"perplexity": 30.0}


def test_random_labels_give_the_chance_level_sum_of_squared_shares(rng):
    """A structured embedding, labels drawn independently: NH(k) ~ sum_c p_c^2 (tol 0.02)."""
    points = rng.uniform(0.0, 1.0, (2000, 2))
    labels = rng.choice(4, size=2000, p=[0.4, 0.3, 0.2, 0.1])
    shares = np.bincount(labels) / len(labels)
    chance = float(np.sum(shares**2))  # about 0.30
    assert neighborhood_hit(points, labels, k=6) == pytest.approx(chance, abs=0.02)
    # the same points with labels given by position are far above chance
    assert neighborhood_hit(points, (points[:, 0] > 0.5).astype(int), k=6) > 0.9


def test_neighbourhood_hit_excludes_the_point_itself():
    """Pairs (0, 1) and (10, 11) on a line, labels A B A B: each point's nearest other point
    has the other label, so NH(1) = 0; counting the point itself would give 1."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    labels = np.array(["A", "B", "A", "B"])
    assert neighborhood_hit(points, labels, k=1) == 0.0
    # k = 2: the partner and the nearest point of the other pair (distance 9 or 10):
    # A@0 -> {B@1, A@10}, B@1 -> {A@0, A@10}, A@10 -> {B@11, B@1}, B@11 -> {A@10, B@1}: 2/8
    # (with the point itself it would be {self, partner}: 4/8)
    assert neighborhood_hit(points, labels, k=2) == pytest.approx(2 / 8, abs=1e-12)
    assert projection_neighbors(points, k=2).tolist() == [[1, 2], [0, 2], [3, 1], [2, 1]]


def test_duplicated_points_are_neighbours_but_not_of_themselves():
    points = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    labels = np.array([0, 1, 0, 1])
    assert projection_neighbors(points, k=1).ravel().tolist() == [1, 0, 3, 2]
    assert neighborhood_hit(points, labels, k=1) == 0.0


def test_invalid_k_is_an_input_error_naming_k():
    x, y = _blobs(n_per_class=5)
    with pytest.raises(InputError, match="k must"):
        neighborhood_hit(x[:, :2], y, k=0)
    with pytest.raises(InputError, match="k must"):
        trustworthiness(x, x[:, :2], k=10)  # n = 20: k must be < n / 2
    with pytest.raises(InputError, match="method must be one of"):
        project_layer(x, y, method="mds")  # type: ignore[arg-type]


# --- trustworthiness --------------------------------------------------------------------------

def test_trustworthiness_of_an_isometry_is_one(rng):
    """2-D data embedded as itself, rotated and shifted: no false neighbours (tol 1e-12)."""
    points = rng.standard_normal((300, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    embedded = points @ rotation.T + 3.0
    assert trustworthiness(points, embedded, k=5) == pytest.approx(1.0, abs=1e-12)
    # a random embedding is untrustworthy: about 0.5 (Venna & Kaski 2001)
    scrambled = rng.standard_normal((300, 2))
    assert trustworthiness(points, scrambled, k=5) < 0.65


@pytest.mark.parametrize("k", [1, 5, 12])
def test_trustworthiness_agrees_with_scikit_learn(rng, k):
    """Continuous data (no distance ties): equal to 1e-12. Digits (integer pixels, many
    equal distances; scikit-learn breaks ties in an arbitrary order, we by index): within 1e-4."""
    data = rng.standard_normal((400, 8))
    embedding = data[:, :2] + 0.5 * rng.standard_normal((400, 2))
    assert trustworthiness(data, embedding, k=k) == pytest.approx(
        sklearn_trustworthiness(data, embedding, n_neighbors=k), abs=1e-12)
    digits = load_digits().data[:600]
    projected = pca_embedding(digits, n_components=2)
    assert trustworthiness(digits, projected, k=k) == pytest.approx(
        sklearn_trustworthiness(digits, projected, n_neighbors=k), abs=1e-4)


# --- the methods on digits (Rauber et al. 2017 use these as the baseline picture) --------------

@pytest.mark.slow
def test_tsne_on_raw_digits_separates_the_classes():
    """openTSNE on the raw 64 pixels, all 1797 digits, perplexity 30, seed 0:
    NH(6) >= 0.97 and T(5) >= 0.98 (measured: about 0.98 and 0.995)."""
    digits = load_digits()
    coordinates = tsne_embedding(digits.data, perplexity=30, seed=0)
    assert coordinates.shape == (1797, 2)
    assert neighborhood_hit(coordinates, digits.target, k=6) >= 0.97
    assert trustworthiness(digits.data, coordinates, k=5) >= 0.98


def test_pca_on_raw_digits_mixes_the_classes():
    """PCA of the raw digits: NH(6) = 0.580 (scikit-learn's PCA gives the same), tol +-0.03."""
    digits = load_digits()
    result = project_layer(digits.data, digits.target, method="pca", k=6)
    assert result.neighborhood_hit == pytest.approx(0.58, abs=0.03)
    assert result.pca_preprocessing is None


def test_pca_matches_scikit_learn_up_to_sign():
    from sklearn.decomposition import PCA

    digits = load_digits().data
    for n_components in (2, 50):  # 50: the preprocessing before t-SNE / UMAP (Lanczos path)
        ours = pca_embedding(digits, n_components=n_components)
        theirs = PCA(n_components, svd_solver="full").fit_transform(digits)
        np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-8 * np.abs(theirs).max())
    wide = np.random.default_rng(1).standard_normal((40, 300))  # Gram-matrix path (n < d)
    np.testing.assert_allclose(np.abs(pca_embedding(wide)),
                               np.abs(PCA(2, svd_solver="full").fit_transform(wide)), atol=1e-8)


# --- subsampling ------------------------------------------------------------------------------

def test_stratified_subsample_is_seeded_and_keeps_class_shares():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    keep = stratified_subsample(labels, 200, seed=3)
    assert keep is not None and len(keep) == 200 and len(np.unique(keep)) == 200
    assert np.all(np.diff(keep) > 0)
    counts = np.bincount(labels[keep], minlength=3)
    np.testing.assert_allclose(counts, [120, 60, 20], atol=1)  # proportional, +-1 sample
    np.testing.assert_array_equal(keep, stratified_subsample(labels, 200, seed=3))
    assert not np.array_equal(keep, stratified_subsample(labels, 200, seed=4))
    assert stratified_subsample(labels, None) is None
    assert stratified_subsample(labels, 5000) is None


# --- _run(spec, ctx) ---------------------------------------------------------------------------

def _tiny_net() -> nn.Sequential:
    """Layer 0: identity on 4 inputs; layer 1: its ReLU; layer 2: a constant (zero weights)."""
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4))
        net[0].bias.zero_()
        net[2].weight.zero_()
        net[2].bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    return net


@pytest.fixture
def blob_context(tmp_path):
    x, y = _blobs(n_per_class=100, dim=4, spread=20.0)
    data = Dataset.from_arrays("blobs", x, y)
    model = load_model(save_scripted(_tiny_net(), tmp_path / "tiny.pt"), input_shape=(4,),
                       device="cpu")
    activations = capture_activations(model, data, batch_size=128)
    return AnalysisContext(model, data, activations, ArtifactWriter(tmp_path), device="cpu")


def test_run_reports_every_layer_and_skips_the_constant_one(blob_context, tmp_path):
    steps = []
    blob_context.progress = lambda step, total, metrics: steps.append((step, total, metrics))
    section = _run(ProjectionSpec(kind="projection", method="pca", k=6), blob_context)
    json.dumps(section)  # plain JSON
    assert (section["method"], section["k"], section["n_points"]) == ("pca", 6, 400)
    assert section["subsampled_from"] is None
    assert [row["layer"] for row in section["layers"]] == ["0", "1", "2"]
    first, _, constant = section["layers"]
    assert first["neighborhood_hit"] == 1.0
    assert "skipped" not in first and "same for every sample" in constant["skipped"]
    coordinates = np.load(tmp_path / first["coordinates"])
    assert coordinates.shape == (400, 2) and coordinates.dtype == np.float32
    assert (tmp_path / first["image"]).stat().st_size > 10_000
    assert [(step, total) for step, total, _ in steps] == [(1, 3), (2, 3), (3, 3)]
    assert steps[0][2]["neighborhood_hit"] == 1.0


def test_run_stops_when_progress_asks_and_keeps_the_partial_result(blob_context):
    blob_context.progress = lambda step, total, metrics: step == 1
    section = _run(ProjectionSpec(kind="projection", method="pca"), blob_context)
    assert [row["layer"] for row in section["layers"]] == ["0"]
    assert section["complete"] is False


def test_run_states_a_stratified_subsample(blob_context, tmp_path):
    spec = ProjectionSpec(kind="projection", method="pca", max_samples=100, seed=5)
    section = _run(spec, blob_context)
    assert section["n_points"] == 100 and section["subsampled_from"] == 400
    assert section["subsample"] == "stratified by class" and section["seed"] == 5
    keep = np.load(tmp_path / section["sample_indices"])
    np.testing.assert_array_equal(np.bincount(blob_context.dataset.y[keep]), [25, 25, 25, 25])
    assert np.load(tmp_path / section["layers"][0]["coordinates"]).shape == (100, 2)
    again = _run(spec, blob_context)
    np.testing.assert_array_equal(np.load(tmp_path / again["sample_indices"]), keep)


def test_run_refuses_a_k_too_large_for_the_points(blob_context):
    with pytest.raises(InputError, match=r"projection\.k"):
        _run(ProjectionSpec(kind="projection", method="pca", k=200), blob_context)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_analyze_projects_every_layer_of_the_digits_cnn(cnn_files, digits, tmp_path, fmt):
    options = JobOptions(analyses=parse_spec([{"kind": "projection", "method": "pca"}]))
    report = analyze(cnn_files[fmt], digits, tmp_path, options)
    section = report.analyses["projection"]
    assert section["n_points"] == digits.n_samples and section["k"] == 6
    assert [row["layer"] for row in section["layers"]] == \
        [layer.name for layer in report.model.layers]  # every layer, forward order
    for row in section["layers"]:
        assert row["method"] == "pca"
        assert 0.0 <= row["neighborhood_hit"] <= 1.0 and 0.0 <= row["trustworthiness"] <= 1.0
        assert (tmp_path / row["image"]).is_file()
        assert np.load(tmp_path / row["coordinates"]).shape == (digits.n_samples, 2)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="projection"' in html and section["layers"][0]["image"] in html
