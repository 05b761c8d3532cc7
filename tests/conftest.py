"""Shared fixtures: a trained digits CNN exported to both formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.demo.model import (
    DIGITS_SHAPE,
    digits_cnn,
    export_onnx,
    export_torchscript,
    train_classifier,
)
from layerlens.data import Dataset, resolve_dataset


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return resolve_dataset("builtin:digits")


@pytest.fixture(scope="session")
def trained_cnn(digits: Dataset) -> torch.nn.Module:
    """The demo CNN trained for about two seconds (seeded)."""
    train, _ = digits.split(seed=0)
    images = digits.x.reshape(-1, *DIGITS_SHAPE)
    return train_classifier(digits_cnn(), images[train], digits.y[train], seconds=2.0,
                            max_epochs=8, seed=0)


@pytest.fixture(scope="session")
def cnn_files(trained_cnn, tmp_path_factory) -> dict[str, object]:
    """``{"onnx": path, "torchscript": path}`` of the same trained CNN."""
    folder = tmp_path_factory.mktemp("cnn")
    return {"onnx": export_onnx(trained_cnn, folder / "cnn.onnx", DIGITS_SHAPE),
            "torchscript": export_torchscript(trained_cnn, folder / "cnn.pt")}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
