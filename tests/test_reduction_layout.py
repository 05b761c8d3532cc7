"""Capture reductions respect the layer's layout: spatial means only over the spatial axes of
a channels-first feature map, never over the features of a vector, sequence or softmax."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from layerlens.capture import capture_activations
from layerlens.data import Dataset
from layerlens.models import LayerInfo, load_model
from layerlens.reduction import feature_map_layers, plan_reductions
from layerlens.resolution import resolution
from tests.nets import save_scripted


def test_onnx_cnn_feature_maps_pass_through_elementwise_ops_and_channel_concat():
    layers = [LayerInfo("sub", "Sub", (3, 8, 8)),  # before any convolution: layout unknown
              LayerInfo("conv", "Conv", (4, 8, 8)), LayerInfo("relu", "Relu", (4, 8, 8)),
              LayerInfo("cat", "Concat", (7, 8, 8)), LayerInfo("bn", "BatchNormalization",
                                                               (7, 8, 8)),
              LayerInfo("add", "Add", (7, 8, 8)), LayerInfo("pool", "GlobalAveragePool",
                                                            (7, 1, 1)),
              LayerInfo("flat", "Flatten", (7,)), LayerInfo("fc", "Gemm", (10,))]
    assert feature_map_layers(layers) == {"conv", "relu", "cat", "bn", "add", "pool"}


def test_torch_module_types_and_custom_blocks():
    layers = [LayerInfo("stem", "Conv2d", (8, 16, 16)), LayerInfo("act", "ReLU", (8, 16, 16)),
              LayerInfo("block", "BasicBlock", (8, 16, 16)),
              LayerInfo("pool", "AdaptiveAvgPool2d", (8, 1, 1)),
              LayerInfo("audio", "Conv1d", (32, 49)), LayerInfo("gelu", "GELU", (32, 49)),
              LayerInfo("norm", "GroupNorm", (32, 49))]
    assert feature_map_layers(layers) == {"stem", "act", "block", "pool", "audio", "gelu", "norm"}


def test_sequences_softmaxes_and_attention_are_never_feature_maps():
    """Transformer blocks in ONNX and torch; transformers' Conv1D is a linear layer."""
    onnx = [LayerInfo("q", "MatMul", (12, 64)), LayerInfo("scores", "MatMul", (4, 12, 12)),
            LayerInfo("scaled", "Div", (4, 12, 12)), LayerInfo("attn", "Softmax", (4, 12, 12)),
            LayerInfo("ctx", "Transpose", (12, 4, 16)), LayerInfo("merge", "Reshape", (12, 64)),
            LayerInfo("res", "Add", (12, 64)), LayerInfo("ln", "LayerNormalization", (12, 64)),
            LayerInfo("gelu", "Gelu", (12, 256)), LayerInfo("vocab", "Softmax", (1, 6625))]
    torch_types = [LayerInfo("c_attn", "Conv1D", (12, 192)), LayerInfo("act", "NewGELU",
                                                                      (12, 192)),
                   LayerInfo("emb", "Embedding", (12, 64)), LayerInfo("lstm", "LSTM", (12, 32)),
                   LayerInfo("probs", "Softmax", (12, 6625))]
    assert feature_map_layers(onnx) == set() and feature_map_layers(torch_types) == set()


def test_channels_last_after_a_permute_is_not_a_feature_map():
    """ConvNeXt's block: conv (C, H, W), permute to (H, W, C), layer norm, linear, GELU."""
    layers = [LayerInfo("dw", "Conv2d", (96, 14, 14)), LayerInfo("perm", "Permute", (14, 14, 96)),
              LayerInfo("ln", "LayerNorm", (14, 14, 96)), LayerInfo("fc", "Linear", (14, 14, 384)),
              LayerInfo("gelu", "GELU", (14, 14, 384)), LayerInfo("relu", "ReLU", (14, 14, 96))]
    assert feature_map_layers(layers) == {"dw"}


def test_the_plan_projects_what_is_not_a_feature_map():
    """A (T, vocab) softmax over budget is projected, a feature map averaged over space."""
    layers = [LayerInfo("conv", "Conv", (16, 32, 32)), LayerInfo("probs", "Softmax", (4, 6625))]
    plan = plan_reductions(layers, 100, memory_budget=100 * (16 + 500) * 4, max_features=500)
    assert plan["conv"].method == "spatial_mean" and plan["conv"].to == 16
    assert plan["probs"].method == "random_projection" and plan["probs"].to == 500


class _TokenHead(nn.Module):
    """(n, 8) -> a (T=3, vocab=5000) softmax, and a (L=6, D=60) tanh sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.logits, self.grid = nn.Linear(8, 3 * 5000), nn.Unflatten(1, (3, 5000))
        self.probs = nn.Softmax(dim=-1)
        self.embed, self.seq = nn.Linear(8, 6 * 60), nn.Unflatten(1, (6, 60))
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.probs(self.grid(self.logits(x)))
        return probs[:, :, :60].sum(dim=1) + self.act(self.seq(self.embed(x))).mean(dim=1)


def test_a_vocab_softmax_is_not_averaged_over_its_vocabulary(tmp_path):
    """Over budget, every layer is projected to 128 features: the (3, 5000) softmax keeps
    its variation instead of becoming 3 vocabulary means (each 1/5000 up to rounding), and
    the (6, 60) sequence is not averaged over its 60 features."""
    torch.manual_seed(0)
    net = _TokenHead().eval()
    model = load_model(save_scripted(net, tmp_path / "head.pt"), input_shape=(8,), device="cpu")
    shapes = {layer.name: layer.shape for layer in model.layers}
    assert shapes["probs"] == (3, 5000) and shapes["act"] == (6, 60)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    data = Dataset.from_arrays("random", x, np.arange(64) % 2)
    acts = capture_activations(model, data, memory_budget=64 * 4 * 800, max_features=128)
    for name in ("probs", "act"):
        captured = acts.layers[name]
        assert captured.reduction is not None, name
        assert captured.reduction.method == "random_projection", name
        assert captured.values.shape == (64, 128), name
        spread = np.ptp(captured.values, axis=0)
        assert (spread > 1e3 * resolution(np.abs(captured.values).max(axis=0))).all(), name
    with torch.no_grad():
        full = net.probs(net.grid(net.logits(torch.from_numpy(x)))).numpy()
    np.testing.assert_allclose(full.mean(axis=2), 1 / 5000, rtol=1e-5)  # what a mean keeps


def test_a_conv1d_feature_map_is_averaged_over_time(tmp_path):
    """(C, T) after Conv1d and its ReLU: the spatial mean over T (atol 1e-6)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Unflatten(1, (1, 400)), nn.Conv1d(1, 6, 5), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 396, 2))
    model = load_model(save_scripted(net, tmp_path / "audio.pt"), input_shape=(400,),
                       device="cpu")
    x = np.random.default_rng(1).standard_normal((32, 400)).astype(np.float32)
    data = Dataset.from_arrays("random", x, np.arange(32) % 2)
    acts = capture_activations(model, data, memory_budget=32 * 4 * 100, max_features=8)
    conv, relu = acts.layers["1"], acts.layers["2"]
    assert conv.reduction.method == relu.reduction.method == "spatial_mean"
    with torch.no_grad():
        full = net[2](net[1](net[0](torch.from_numpy(x)))).numpy()
    np.testing.assert_allclose(relu.values, full.mean(axis=2), atol=1e-6)
