"""Datasets that ship with layerlens or scikit-learn: nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import numpy as np
import scipy.io
from sklearn import datasets as sk

from layerlens.data.dataset import Dataset


def _sklearn(loader: Callable[..., tuple[np.ndarray, np.ndarray]],
             image_shape: tuple[int, ...] | None = None) -> Callable[[str], Dataset]:
    def load(ref: str) -> Dataset:
        x, y = loader(return_X_y=True)
        return Dataset.from_arrays(ref, x, y, image_shape)
    return load


def _ib12(ref: str) -> Dataset:
    """The 4096 12-bit patterns of Shwartz-Ziv & Tishby (2017), binary labels.

    References
    ----------
    R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
    networks via information", arXiv:1703.00810, 2017.
    """
    with resources.files(__name__).joinpath("var_u.mat").open("rb") as handle:
        mat = scipy.io.loadmat(handle)
    return Dataset.from_arrays(ref, mat["F"], mat["y"].ravel())


BUILTIN: dict[str, Callable[[str], Dataset]] = {
    "digits": _sklearn(sk.load_digits, image_shape=(1, 8, 8)),
    "iris": _sklearn(sk.load_iris),
    "wine": _sklearn(sk.load_wine),
    "breast_cancer": _sklearn(sk.load_breast_cancer),
    "ib12": _ib12,
}
