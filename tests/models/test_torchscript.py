"""TorchScript adapter: layers from the graph, one-pass capture, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from layerlens.models import load_model
from tests.nets import ResidualBlock, SharedReLU, TinyResNet, save_scripted, save_traced

RESNET_LAYERS = [
    "stem.0", "stem.1",
    "blocks.0.conv1", "blocks.0.relu", "blocks.0.conv2", "blocks.0",
    "blocks.1.conv1", "blocks.1.relu", "blocks.1.conv2", "blocks.1",
    "pool", "flatten", "fc",
]


@pytest.fixture(scope="module")
def resnet() -> TinyResNet:
    torch.manual_seed(0)
    return TinyResNet().eval()


@pytest.mark.parametrize("export", ["scripted", "traced"])
def test_residual_model_layers_and_capture(resnet, export, tmp_path):
    example = torch.randn(3, 1, 8, 8)
    path = (save_scripted(resnet, tmp_path / "m.pt") if export == "scripted"
            else save_traced(resnet, example, tmp_path / "m.pt"))
    model = load_model(path, input_shape=(1, 8, 8), device="cpu")

    assert model.format == "torchscript"
    assert model.layer_names == RESNET_LAYERS
    assert model.layer("blocks.0").op == "ResidualBlock"
    assert model.layer("blocks.0.conv1").shape == (8, 8, 8)
    assert model.layer("fc").shape == (10,)

    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    captured = model.capture(x, model.layer_names)
    with torch.no_grad():
        t = torch.from_numpy(x)
        expected_output = resnet(t).numpy()
        block0 = resnet.blocks[0](resnet.stem(t)).numpy()
        conv1 = resnet.blocks[0].conv1(resnet.stem(t)).numpy()
    np.testing.assert_allclose(captured["fc"], expected_output, atol=1e-5)
    np.testing.assert_allclose(captured["blocks.0"], block0, atol=1e-5)
    np.testing.assert_allclose(captured["blocks.0.conv1"], conv1, atol=1e-5)
    assert (captured["blocks.0"] >= 0).all()  # the block ends in a ReLU


def test_module_called_twice_gives_two_layers(tmp_path):
    torch.manual_seed(0)
    net = SharedReLU().eval()
    model = load_model(save_scripted(net, tmp_path / "m.pt"), input_shape=(4,), device="cpu")
    assert "relu" in model.layer_names and "relu#2" in model.layer_names
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    captured = model.capture(x, ["relu", "relu#2"])
    with torch.no_grad():
        t = torch.from_numpy(x)
        np.testing.assert_allclose(captured["relu"], torch.relu(net.fc1(t)).numpy(), atol=1e-6)
        np.testing.assert_allclose(captured["relu#2"], torch.relu(t).numpy(), atol=1e-6)


class _CountingNet(nn.Module):
    """Counts its forward calls in a module attribute (mutated inside TorchScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                                  nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.body(x)


def test_all_layers_come_from_one_forward_pass(tmp_path):
    model = load_model(save_scripted(_CountingNet(), tmp_path / "m.pt"), input_shape=(4,),
                       device="cpu")
    module = model._module  # the loaded ScriptModule; only this test peeks inside
    before = module.calls
    captured = model.capture(np.ones((3, 4), np.float32), model.layer_names)
    assert len(captured) == 5
    assert module.calls - before == 1


def test_gradients_reach_the_input(resnet, tmp_path):
    model = load_model(save_scripted(resnet, tmp_path / "m.pt"), input_shape=(1, 8, 8),
                       device="cpu")
    assert model.differentiable
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    out = model.capture_torch(x, ["blocks.1.conv1", "fc"])
    out["blocks.1.conv1"][:, 3].mean().backward()

    reference = x.detach().clone().requires_grad_(True)
    stem_out = resnet.stem(reference)
    resnet.blocks[1].conv1(resnet.blocks[0](stem_out))[:, 3].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, reference.grad, atol=1e-6, rtol=1e-5)


def test_dead_module_output_is_not_a_layer(tmp_path):
    class WithUnusedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.aux = nn.Linear(3, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    model = load_model(save_scripted(WithUnusedHead(), tmp_path / "m.pt"), input_shape=(3,),
                       device="cpu")
    assert model.layer_names == ["fc"]


def test_block_listed_under_deepest_module(tmp_path):
    torch.manual_seed(0)
    block = nn.Sequential(ResidualBlock(2), nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()))
    model = load_model(save_scripted(block, tmp_path / "m.pt"), input_shape=(2, 4, 4),
                       device="cpu")
    # "1" (a Sequential) ends in its ReLU: listed once, as "1.1"
    assert model.layer_names == ["0.conv1", "0.relu", "0.conv2", "0", "1.0", "1.1"]


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class _IteratedLists(nn.Module):
    """Containers iterated, never called: they never appear in a TorchScript call stack."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([_Block(), _Block()])
        self.norms = nn.ModuleList([nn.LayerNorm(4)])
        self.q = nn.ModuleList([nn.Linear(4, 4)])  # two lists of one type: ambiguous
        self.k = nn.ModuleList([nn.Linear(4, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.encoder.layers:
            x = block(x)
        for norm in self.norms:
            x = norm(x)
        for q, k in zip(self.q, self.k):  # noqa: B905 (TorchScript has no strict=)
            x = q(x) * k(x)
        return x


@pytest.mark.parametrize("export", ["scripted", "traced"])
def test_layers_inside_iterated_module_lists_keep_the_list_name(export, tmp_path):
    """The names are the module paths of ``named_modules()`` (as the ONNX exporter and
    ``.pt2`` record them), the ModuleList attribute included; where two lists hold modules
    of the same type under the same name, the call stack cannot tell them apart and the
    layer keeps its bare name rather than a guessed one."""
    torch.manual_seed(0)
    net = _IteratedLists().eval()
    path = (save_scripted(net, tmp_path / "m.pt") if export == "scripted"
            else save_traced(net, torch.zeros(2, 4), tmp_path / "m.pt"))
    model = load_model(path, input_shape=(4,), device="cpu")
    names = model.layer_names
    assert names[:5] == ["encoder.layers.0.fc", "encoder.layers.0.act",
                         "encoder.layers.1.fc", "encoder.layers.1.act", "norms.0"]
    assert set(names[5:]) <= {"0", "0#2", "0#3"}
    modules = dict(_IteratedLists().named_modules())
    assert all(name in modules for name in names[:5])
