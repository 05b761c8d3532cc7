"""Datasets that ship with layerlens or scikit-learn: nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from layerlens.data.dataset import Dataset


def _sklearn(loader: str, image_shape: tuple[int, ...] | None = None) -> Callable[[str], Dataset]:
    """A loader of ``sklearn.datasets.<loader>``; scikit-learn is imported on first use."""
    def load(ref: str) -> Dataset:
        from sklearn import datasets

        x, y = getattr(datasets, loader)(return_X_y=True)
        return Dataset.from_arrays(ref, x, y, image_shape)
    return load


def _ib12(ref: str) -> Dataset:
    """The 4096 12-bit patterns of Shwartz-Ziv & Tishby (2017), binary labels.

    References
    ----------
    R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
    networks via information", arXiv:1703.00810, 2017.
    """
    import scipy.io

    with resources.files(__name__).joinpath("var_u.mat").open("rb") as handle:
        mat = scipy.io.loadmat(handle)
    return Dataset.from_arrays(ref, mat["F"], mat["y"].ravel())


BUILTIN: dict[str, Callable[[str], Dataset]] = {
    "digits": _sklearn("load_digits", image_shape=(1, 8, 8)),
    "iris": _sklearn("load_iris"),
    "wine": _sklearn("load_wine"),
    "breast_cancer": _sklearn("load_breast_cancer"),
    "ib12": _ib12,
}
