"""Dataset references, files and splits."""

from __future__ import annotations

import numpy as np
import pytest

from layerlens.data import BUILTIN_NAMES, resolve_dataset
from layerlens.errors import DatasetError, InputError


@pytest.mark.parametrize(("name", "n", "d", "k"), [
    ("digits", 1797, 64, 10), ("iris", 150, 4, 3), ("wine", 178, 13, 3),
    ("breast_cancer", 569, 30, 2), ("ib12", 4096, 12, 2),
])
def test_builtin_shapes(name, n, d, k):
    data = resolve_dataset(f"builtin:{name}")
    assert data.x.shape == (n, d) and data.x.dtype == np.float32
    assert data.n_classes == k and set(np.unique(data.y)) == set(range(k))
    assert name in BUILTIN_NAMES


def test_ib12_is_the_shwartz_ziv_tishby_set():
    data = resolve_dataset("builtin:ib12")
    # all 2^12 binary patterns, each exactly once
    codes = data.x.astype(int) @ (1 << np.arange(12))
    assert sorted(codes) == list(range(4096))
    assert np.bincount(data.y).tolist() == [1978, 2118]
    p = 2118 / 4096
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert entropy == pytest.approx(0.99916, abs=1e-5)  # the paper's H(Y)


def test_digits_offers_image_layout():
    assert resolve_dataset("builtin:digits").sample_shapes == [(64,), (1, 8, 8)]


def test_split_is_seeded_disjoint_and_stratified():
    data = resolve_dataset("builtin:digits")
    train, test = data.split(test_fraction=0.25, seed=3)
    again = data.split(test_fraction=0.25, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not set(train) & set(test) and len(train) + len(test) == data.n_samples
    assert len(test) == pytest.approx(0.25 * data.n_samples, abs=1)
    share = np.bincount(data.y[test], minlength=10) / len(test)
    np.testing.assert_allclose(share, np.bincount(data.y) / data.n_samples, atol=0.01)
    other = data.split(test_fraction=0.25, seed=4)[1]
    assert not np.array_equal(test, other)


def test_split_rejects_bad_fraction():
    with pytest.raises(InputError, match="test_fraction"):
        resolve_dataset("builtin:iris").split(test_fraction=1.5)


def test_subsample_is_stratified_and_seeded():
    data = resolve_dataset("builtin:digits")
    small = data.subsample(200, seed=1)
    assert small.n_samples == 200
    assert np.bincount(small.y).min() >= 18
    assert np.array_equal(small.x, data.subsample(200, seed=1).x)


def test_batches_cover_everything_in_order():
    data = resolve_dataset("builtin:iris")
    xs = [x for x, _ in data.batches(64)]
    assert [len(x) for x in xs] == [64, 64, 22]
    np.testing.assert_array_equal(np.concatenate(xs), data.x)


def test_npz_round_trip_with_string_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(12.0).reshape(6, 2), y=np.array(["b", "a", "b", "a", "c", "c"]))
    data = resolve_dataset(str(path))
    assert data.class_names == ("a", "b", "c")
    assert data.y.tolist() == [1, 0, 1, 0, 2, 2]


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("f1,label,f2\n1.0,3,2.0\n3.5,7,4\n0,3,0\n")
    data = resolve_dataset(str(path))
    np.testing.assert_array_equal(data.x, [[1, 2], [3.5, 4], [0, 0]])
    assert data.class_names == ("3", "7") and data.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize(("text", "message"), [
    ("a,label\n1,0\n2\n", "line 3 has 1 fields"),
    ("a,label\nx,0\n", "numeric"),
    ("label\n", "header row and at least one data row"),
])
def test_csv_errors(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        resolve_dataset(str(path))


def test_npz_with_nan_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([[1.0], [np.nan]]), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="NaN"):
        resolve_dataset(str(path))


def test_file_reference_must_be_under_a_root(tmp_path):
    path = tmp_path / "inside" / "d.npz"
    path.parent.mkdir()
    np.savez(path, x=np.zeros((2, 3)), y=np.array([0, 1]))
    assert resolve_dataset(f"file://{path}", roots=[tmp_path / "inside"]).n_samples == 2
    with pytest.raises(DatasetError, match="outside the allowed dataset roots"):
        resolve_dataset(f"file://{path}", roots=[tmp_path / "elsewhere"])
    with pytest.raises(DatasetError, match="outside"):
        resolve_dataset(f"file://{tmp_path}/inside/../inside/../../etc/passwd",
                        roots=[tmp_path / "inside"])


@pytest.mark.parametrize("ref", ["dataset:abc", "s3://bucket/key.npz"])
def test_service_references_are_explained(ref):
    with pytest.raises(DatasetError, match="service"):
        resolve_dataset(ref)


def test_local_paths_can_be_disallowed(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match="unknown dataset reference"):
        resolve_dataset(str(path), allow_local=False)
