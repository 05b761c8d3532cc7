"""``torch.export`` ``.pt2`` archives: module-path layers, one-pass capture, gradients,
fixed and bounded batch axes, and archives that would run code when torch loads them."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.utils._python_dispatch import TorchDispatchMode

from layerlens.errors import ModelFormatError, ShapeMismatchError
from layerlens.models import load_model
from layerlens.models.sniff import sniff_format
from layerlens.report import Report
from layerlens_client.cli import main
from tests.nets import SharedReLU, TinyResNet, save_scripted
from tests.test_bad_input import analyze, assert_one_line_error

RTOL, ATOL = 1e-5, 1e-6
DYNAMIC_BATCH = Dim("batch")


def save_exported(net: nn.Module, example: torch.Tensor, path: Path,
                  batch: Dim | None = DYNAMIC_BATCH) -> Path:
    """``torch.export.save`` of ``net``; the batch axis dynamic (``batch``) or fixed at the
    example's batch size (``None``)."""
    shapes = None if batch is None else ({0: batch},)
    torch.export.save(torch.export.export(net.eval(), (example,), dynamic_shapes=shapes), path)
    return path


def eager_outputs(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every module's output on ``x``, by module path, from forward hooks."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(
        lambda _m, _i, out, name=name: outputs.setdefault(name, out))
        for name, module in net.named_modules() if name]
    with torch.no_grad():
        net(x)
    for handle in handles:
        handle.remove()
    return outputs


@pytest.fixture(scope="module")
def resnet() -> TinyResNet:
    torch.manual_seed(0)
    return TinyResNet().eval()


@pytest.fixture(scope="module")
def resnet_pt2(resnet, tmp_path_factory) -> Path:
    return save_exported(resnet, torch.randn(2, 1, 8, 8),
                         tmp_path_factory.mktemp("pt2") / "resnet.pt2")


@pytest.fixture(scope="module")
def cnn_pt2(trained_cnn, tmp_path_factory) -> Path:
    return save_exported(trained_cnn, torch.zeros(2, 1, 8, 8),
                         tmp_path_factory.mktemp("pt2") / "cnn.pt2")


def test_layers_are_the_torchscript_module_paths(resnet, resnet_pt2, cnn_pt2, cnn_files,
                                                 tmp_path):
    ts_resnet = load_model(save_scripted(resnet, tmp_path / "resnet.pt"),
                           input_shape=(1, 8, 8), device="cpu")
    for pt2_path, ts_model in ((resnet_pt2, ts_resnet),
                               (cnn_pt2, load_model(cnn_files["torchscript"],
                                                    input_shape=(1, 8, 8), device="cpu"))):
        model = load_model(pt2_path, device="cpu")  # the input shape is in the program
        assert model.format == "pt2" and model.input_spec.shape == (1, 8, 8)
        assert model.layer_names == ts_model.layer_names
        assert [layer.op for layer in model.layers] == [layer.op for layer in ts_model.layers]
        assert [layer.shape for layer in model.layers] == [layer.shape for layer in
                                                           ts_model.layers]
    assert ts_resnet.layer_names[5] == "blocks.0"  # a block ending in a functional ReLU


def test_capture_equals_the_eager_modules(resnet, resnet_pt2, rng):
    model = load_model(resnet_pt2, device="cpu")
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    captured = model.capture(x, model.layer_names)
    expected = eager_outputs(resnet, torch.from_numpy(x))
    for name in model.layer_names:
        np.testing.assert_allclose(captured[name], expected[name].numpy(), rtol=RTOL,
                                   atol=ATOL, err_msg=name)


class _CountConvolutions(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func is torch.ops.aten.convolution.default
        return func(*args, **(kwargs or {}))


def test_every_layer_comes_from_one_pass_and_capture_stops_early(resnet_pt2, rng):
    model = load_model(resnet_pt2, device="cpu")
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    with _CountConvolutions() as counter:
        model.capture(x, model.layer_names)
    assert counter.calls == 5  # the network's five convolutions, each run once
    with _CountConvolutions() as counter:
        model.capture(x, ["stem.1"])
    assert counter.calls == 1


def test_gradients_equal_autograd_on_the_eager_module(resnet, resnet_pt2):
    model = load_model(resnet_pt2, device="cpu")
    assert model.differentiable
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    out = model.capture_torch(x, ["blocks.1.conv1", "fc"])
    (out["blocks.1.conv1"][:, 3].mean() + out["fc"][:, 7].sum()).backward()

    reference = x.detach().clone().requires_grad_(True)
    hidden = resnet.blocks[0](resnet.stem(reference))
    (resnet.blocks[1].conv1(hidden)[:, 3].mean() + resnet(reference)[:, 7].sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, reference.grad, rtol=RTOL, atol=ATOL)


def test_value_changed_in_place_later_is_captured_as_computed(tmp_path, rng):
    torch.manual_seed(0)
    net = SharedReLU().eval()  # fc2's output goes through relu_ (in place) afterwards
    model = load_model(save_exported(net, torch.randn(2, 4), tmp_path / "m.pt2"), device="cpu")
    assert model.layer_names == ["fc1", "relu", "fc2", "relu#2"]
    x = rng.standard_normal((6, 4)).astype(np.float32)
    captured = model.capture(x, model.layer_names)
    with torch.no_grad():
        t = torch.from_numpy(x)
        fc2 = net.fc2(torch.relu(net.fc1(t)))
    assert (fc2 < 0).any()
    np.testing.assert_allclose(captured["fc2"], fc2.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(captured["relu#2"], torch.relu(t).numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("example_batch", "batch", "n"), [
    (1, None, 5),                         # fixed at 1: five chunks of one
    (2, None, 7),                         # fixed at 2: the last chunk padded
    (2, Dim("b", min=1, max=3), 8),       # bounded: chunks of at most 3
    (4, Dim("b", min=4, max=16), 2),      # too few samples: padded up to 4
])
def test_fixed_or_bounded_batch_runs_in_chunks(resnet, tmp_path, rng, example_batch, batch, n):
    path = save_exported(resnet, torch.randn(example_batch, 1, 8, 8), tmp_path / "m.pt2",
                         batch=batch)
    model = load_model(path, device="cpu")
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    captured = model.capture(x, model.layer_names)
    expected = eager_outputs(resnet, torch.from_numpy(x))
    for name in model.layer_names:
        np.testing.assert_allclose(captured[name], expected[name].numpy(), rtol=RTOL,
                                   atol=ATOL, err_msg=name)
    t = torch.from_numpy(x).requires_grad_(True)
    model.capture_torch(t, ["fc"])["fc"][:, 1].sum().backward()
    reference = torch.from_numpy(x).requires_grad_(True)
    resnet(reference)[:, 1].sum().backward()
    torch.testing.assert_close(t.grad, reference.grad, rtol=RTOL, atol=ATOL)


class _GlobalPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_dynamic_image_size_takes_the_user_dataset_or_example_shape(tmp_path):
    path = tmp_path / "m.pt2"
    dims = {0: Dim("batch"), 2: Dim("h", min=4, max=32), 3: Dim("w", min=4, max=32)}
    torch.export.save(torch.export.export(_GlobalPool().eval(), (torch.randn(2, 3, 8, 6),),
                                          dynamic_shapes=(dims,)), path)
    assert load_model(path, device="cpu").input_spec.shape == (3, 8, 6)  # the example
    assert load_model(path, sample_shapes=[(64,), (3, 16, 12)], device="cpu"
                      ).layer("conv").shape == (4, 16, 12)
    assert load_model(path, input_shape=(3, 5, 7), device="cpu").input_spec.shape == (3, 5, 7)
    with pytest.raises(ShapeMismatchError, match=r"contradicts .* \(3, '\?', '\?'\)"):
        load_model(path, input_shape=(3, 64, 64), device="cpu")  # beyond the exported range


def test_program_exported_in_training_mode_is_refused(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(net.train(), (torch.randn(2, 1, 8, 8),)), path)
    with pytest.raises(ModelFormatError, match=r"training mode .* module '1'.*model\.eval\(\)"):
        load_model(path, device="cpu")


def test_format_comes_from_the_bytes(resnet_pt2, tmp_path):
    renamed = tmp_path / "model.onnx"
    renamed.write_bytes(resnet_pt2.read_bytes())
    assert sniff_format(renamed.read_bytes(), "m") == "pt2"
    assert load_model(renamed, device="cpu").format == "pt2"


# --- archives that run code when torch.export.load reads them --------------------------

class _Payload:
    """Unpickling this creates the sentinel file: proof that a pickle ran code."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _Archive:
    """The members of a ``.pt2`` archive, to edit and write back as a zip."""

    def __init__(self, path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            self.members = {name: archive.read(name) for name in archive.namelist()}
        self.root = next(iter(self.members)).split("/", 1)[0]

    def json(self, member: str) -> dict:
        return json.loads(self.members[f"{self.root}/{member}"])

    def set(self, member: str, data: bytes | dict) -> None:
        self.members[f"{self.root}/{member}"] = (json.dumps(data).encode()
                                                 if isinstance(data, dict) else data)

    def write(self, path: Path) -> Path:
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in self.members.items():
                archive.writestr(name, data)
        return path


def _pickled_weight(archive: _Archive, sentinel: Path) -> None:
    config = archive.json("data/weights/model_weights_config.json")
    entry = config["config"]["0.weight"]
    entry["use_pickle"] = True
    archive.set("data/weights/model_weights_config.json", config)
    archive.set(f"data/weights/{entry['path_name']}", _torch_saved(_Payload(sentinel)))


def _pickled_constant(archive: _Archive, sentinel: Path) -> None:
    archive.set("data/constants/model_constants_config.json", {"config": {"evil": {
        "path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
        "tensor_meta": None}}})
    archive.set("data/constants/opaque_obj_0", pickle.dumps(_Payload(sentinel)))


def _shape_expression(archive: _Archive, sentinel: Path) -> None:
    program = archive.json("models/model.json")
    sizes = program["graph_module"]["graph"]["tensor_values"]["input"]["sizes"]
    sizes[0]["as_expr"]["expr_str"] = (f"__import__('builtins').open('{sentinel}', 'w') and "
                                       "Symbol('s77', positive=True, integer=True)")
    archive.set("models/model.json", program)


def _value_name(archive: _Archive, sentinel: Path) -> None:
    """The input's name becomes ``def forward(self, ..., input=open(...))`` in FX code."""
    evil = f"input=open('{sentinel}', 'w')"
    text = archive.members[f"{archive.root}/models/model.json"].decode()
    text = text.replace('{"as_tensor": {"name": "input"}}',
                        json.dumps({"as_tensor": {"name": evil}}))
    program = json.loads(text)
    values = program["graph_module"]["graph"]["tensor_values"]
    values[evil] = values.pop("input")
    archive.set("models/model.json", program)


def _sample_inputs(archive: _Archive, sentinel: Path) -> None:
    archive.set("data/sample_inputs/model.pt", _torch_saved(_Payload(sentinel)))


def _guards(archive: _Archive, sentinel: Path) -> None:
    program = archive.json("models/model.json")
    program["guards_code"] = [f"open('{sentinel}', 'w') is not None"]
    archive.set("models/model.json", program)


def _run_torch(path: Path) -> None:
    """What a user of torch.export would do with the file: load it and run it."""
    torch.export.load(path).module()(torch.zeros(2, 1, 8, 8))


def _refused(path: Path, *fragments: str) -> None:
    with pytest.raises(ModelFormatError) as raised:
        load_model(path, device="cpu")
    message = str(raised.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(("craft", "refusal"), [
    (_pickled_weight, "stores weight '0.weight' as a pickle"),
    (_pickled_constant, "holds a pickled custom object"),
    (_shape_expression, "symbolic shape that is not arithmetic"),
    (_value_name, "which is not a Python identifier"),
    (_sample_inputs, None),  # never read: the input shape comes from the graph
    (_guards, None),  # never run: layerlens runs the graph, not ExportedProgram.module()
])
def test_archive_that_runs_code_under_torch_is_refused_or_defused(cnn_pt2, tmp_path, craft,
                                                                  refusal):
    torch_sentinel, sentinel = tmp_path / "ran-under-torch", tmp_path / "ran-under-layerlens"
    craft(hostile := _Archive(cnn_pt2), torch_sentinel)
    with contextlib.suppress(Exception):  # some payloads break loading after they ran
        _run_torch(hostile.write(tmp_path / "torch.pt2"))
    assert torch_sentinel.exists()  # the archive is hostile

    craft(hostile := _Archive(cnn_pt2), sentinel)
    path = hostile.write(tmp_path / "model.pt2")
    if refusal is None:
        model = load_model(path, device="cpu")
        model.capture(np.zeros((3, 1, 8, 8), np.float32), model.layer_names)
        assert model.layer_names == load_model(cnn_pt2, device="cpu").layer_names
    else:
        _refused(path, refusal, "model.pt2", "nothing in it was run")
    assert not sentinel.exists()


@pytest.mark.slow  # two runs of the command line, each starting a child process
def test_hostile_or_truncated_archive_through_the_command_line(capsys, cnn_pt2, tmp_path):
    _pickled_weight(hostile := _Archive(cnn_pt2), sentinel := tmp_path / "ran")
    path = hostile.write(tmp_path / "model.pt2")
    assert_one_line_error(*analyze(capsys, path, tmp_path), "model.pt2", "as a pickle",
                          "nothing in it was run")
    assert not sentinel.exists()

    data = cnn_pt2.read_bytes()
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(data[:len(data) // 2])
    assert_one_line_error(*analyze(capsys, truncated, tmp_path), "truncated.pt2")


def _set_target(archive: _Archive, target: str) -> None:
    program = archive.json("models/model.json")
    program["graph_module"]["graph"]["nodes"][1]["target"] = target
    archive.set("models/model.json", program)


@pytest.mark.parametrize(("edit", "refusal"), [
    (lambda a: _set_target(a, "torch.os.system"),
     "calls 'torch.os.system', which is not an ATen operator"),
    (lambda a: _set_target(a, "torch.ops.aten.from_file.default"),
     "calls 'torch.ops.aten.from_file.default', which layerlens does not run"),
    (lambda a: _set_target(a, "torch.ops.higher_order.cond"), "uses control flow"),
    (lambda a: a.set("data/aotinductor/model/model.so", b"\x7fELF"),
     "holds AOTInductor compiled code"),
    (lambda a: a.set("data/weights/model.pt", b""), "pickled weights of an older .pt2 layout"),
    (lambda a: a.set("serialized_state_dict.pt", b""), "'serialized_state_dict.pt'"),
])
def test_archive_calling_more_than_aten_is_refused(cnn_pt2, tmp_path, edit, refusal):
    edit(archive := _Archive(cnn_pt2))
    _refused(archive.write(tmp_path / "model.pt2"), refusal)


def test_garbage_archive_is_one_line(cnn_pt2, tmp_path):
    garbage = _Archive(cnn_pt2)
    garbage.set("models/model.json", b"\x00not json")
    _refused(garbage.write(tmp_path / "g.pt2"), "'g.pt2' has a malformed program")

    short = _Archive(cnn_pt2)
    short.set("data/weights/weight_0", short.members[f"{short.root}/data/weights/weight_0"][:8])
    _refused(short.write(tmp_path / "s.pt2"), "less data than its shape needs")

    empty = _Archive(cnn_pt2)
    del empty.members[f"{empty.root}/models/model.json"]
    _refused(empty.write(tmp_path / "e.pt2"), "has no 'models/model.json'")


@pytest.mark.slow  # the command line runs the analyses in a child process
def test_analyze_end_to_end(capsys, cnn_pt2, cnn_files, tmp_path):
    out = tmp_path / "out"
    code = main(["analyze", str(cnn_pt2), "--dataset", "builtin:digits", "--max-samples", "100",
                 "--analyses", "linear_probe,projection", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.model.format == "pt2" and report.model.differentiable
    assert report.dataset.n_samples == 100
    names = [layer.name for layer in report.model.layers]
    assert names == load_model(cnn_files["torchscript"], input_shape=(1, 8, 8),
                               device="cpu").layer_names
    probes = report.analyses["linear_probe"]["layers"]
    assert [row["layer"] for row in probes] == names
    assert probes[-1]["train_accuracy"] > 0.5  # the trained CNN's logits separate the classes
    assert [row["layer"] for row in report.analyses["projection"]["layers"]] == names


class _MakesATensor(nn.Module):
    """Creates a tensor in forward: the export records the device it was made on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x) + torch.arange(3, dtype=x.dtype, device=x.device))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_capture_and_gradients_match_cpu(resnet, resnet_pt2, tmp_path, rng):
    made = save_exported(_MakesATensor().eval(), torch.randn(2, 4), tmp_path / "made.pt2")
    for path, shape in ((resnet_pt2, (1, 8, 8)), (made, (4,))):
        cpu, gpu = load_model(path, device="cpu"), load_model(path, device="cuda")
        assert gpu.device == "cuda" and gpu.layer_names == cpu.layer_names
        x = rng.standard_normal((9, *shape)).astype(np.float32)
        expected, got = cpu.capture(x, cpu.layer_names), gpu.capture(x, gpu.layer_names)
        for name in cpu.layer_names:  # TF32 convolutions on the GPU: 1e-3
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-3, atol=1e-3)
        grads = []
        for model in (cpu, gpu):
            t = torch.from_numpy(x).to(model.device).requires_grad_(True)
            last = model.layer_names[-1]
            model.capture_torch(t, [last])[last][:, 0].sum().backward()
            grads.append(t.grad.cpu())
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-3)
