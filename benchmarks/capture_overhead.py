"""Capturing every layer versus one plain forward pass, per format.

Model: ResNet-20 for 32x32 images (the small ResNet of He et al. 2016), a
batch of 64, CPU. Baseline: the same file's plain forward pass on the same
engine (onnxruntime session with only the model's outputs; the TorchScript
module's forward). Target: capture-all / plain <= 1.3.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import paired_medians
from layerlens.models import load_model
from tests.nets import CifarResNet, save_scripted

TARGET = 1.3
INPUT_SHAPE = (3, 32, 32)
BATCH = 64


def run() -> list[tuple[str, int, float, float]]:
    """``[(format, layers, plain seconds, capture seconds)]``."""
    torch.manual_seed(0)
    net = CifarResNet().eval()
    x = np.random.default_rng(0).standard_normal((BATCH, *INPUT_SHAPE)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "resnet20.onnx"
        torch.onnx.export(net, (torch.zeros(2, *INPUT_SHAPE),), str(onnx_path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
        onnx_model = load_model(onnx_path, device="cpu")
        session = onnx_model.plain_session()
        names = onnx_model.layer_names
        plain, captured = paired_medians(lambda: session.run(None, {"x": x}),
                                         lambda: onnx_model.capture(x, names))
        rows.append(("onnx", len(names), plain, captured))

        ts_model = load_model(save_scripted(net, Path(folder) / "resnet20.pt"),
                              input_shape=INPUT_SHAPE, device="cpu")
        tensor = torch.from_numpy(x)
        names = ts_model.layer_names
        with torch.no_grad():
            plain, captured = paired_medians(lambda: ts_model.forward(tensor),
                                             lambda: ts_model.capture(x, names))
        rows.append(("torchscript", len(names), plain, captured))
    return rows


def main() -> None:
    print(f"capture overhead: ResNet-20, batch {BATCH} x {INPUT_SHAPE}, CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"{'format':<12} {'layers':>6} {'plain ms':>9} {'capture ms':>11} {'ratio':>6}"
          f"  target <= {TARGET}")
    for fmt, n_layers, plain, captured in run():
        ratio = captured / plain
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(f"{fmt:<12} {n_layers:6d} {plain * 1e3:9.2f} {captured * 1e3:11.2f} {ratio:6.2f}"
              f"  {verdict}")
