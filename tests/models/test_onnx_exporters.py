"""What today's exporters write loads: torch's default (dynamo) exporter with external data,
on the command line and over HTTP; layer names by module path, equal across exporters;
skl2onnx's ZipMap output; a model fixed at batch 1; control flow; models without layers.

Exports are made here with torch 2.13 and skl2onnx (nothing is downloaded). Inspection over
HTTP runs for real: a worker's ``inspect_model`` in a thread, opening each upload in its
sandboxed child while the request waits (as ``tests/service/test_upload_messages.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from infra.config import Settings
from infra.db.session import upgrade
from layerlens.analyze import analyze
from layerlens.data import resolve_dataset
from layerlens.errors import ModelFormatError
from layerlens.models import load_model, select_layers
from layerlens.models.bundle import tar_sha256
from layerlens.options import JobOptions
from layerlens.report import Report
from layerlens.spec import parse_spec
from layerlens_client.cli import main as layerlens_cli
from service.app import create_app
from tests.service.support import embedded_settings
from tests.service.test_upload_messages import inspector
from workers.tasks import JobRun, WorkerContext

SHAPE = (1, 8, 8)
#: The layers every export of :class:`Net` lists: module paths, in forward order.
NET_LAYERS = ["features.0.0", "features.0.1", "features.1.conv", "features.1.act", "features.1",
              "features.2", "head.0", "head.1", "head.2", "head.3"]


class Block(nn.Module):
    """conv, relu, then the residual sum through a functional relu: the block's own output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.act(self.conv(x)) + x)


class Net(nn.Module):
    """A digits CNN with a Sequential inside a Sequential and a residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
                                      Block(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def exports(net: Net, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same network by torch's default exporter (``f.onnx`` + ``f.onnx.data``, batch
    fixed at the example's 2), by the TorchScript-based one, and as TorchScript."""
    folder = tmp_path_factory.mktemp("exports")
    example = (torch.zeros((2, *SHAPE)),)
    (folder / "dynamo").mkdir()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(folder / "dynamo" / "cnn.onnx"))
        torch.onnx.export(net, example, str(folder / "legacy.onnx"), dynamo=False)
    torch.jit.save(torch.jit.trace(net, example), str(folder / "cnn.pt"))
    return {"dynamo": folder / "dynamo" / "cnn.onnx", "legacy": folder / "legacy.onnx",
            "torchscript": folder / "cnn.pt"}


def _export_files(exports: dict[str, Path]) -> list[tuple[str, bytes]]:
    folder = exports["dynamo"].parent
    return [(path.name, path.read_bytes()) for path in sorted(folder.iterdir())]


def _analyze(capsys: pytest.CaptureFixture[str], model: Path, out: Path, *extra: str
             ) -> tuple[int, str]:
    code = layerlens_cli(["analyze", str(model), "--out", str(out), *extra])
    return code, capsys.readouterr().err.strip()


# --- 1. the default exporter's external data -----------------------------------------------

@pytest.mark.slow
def test_the_default_exporter_writes_external_data_that_the_cli_reads(exports, capsys,
                                                                       tmp_path):
    folder = exports["dynamo"].parent
    assert sorted(p.name for p in folder.iterdir()) == ["cnn.onnx", "cnn.onnx.data"]
    code, err = _analyze(capsys, exports["dynamo"], tmp_path / "out", "--dataset",
                         "builtin:digits", "--max-samples", "100", "--analyses", "linear_probe")
    assert code == 0, err
    report = Report.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert [layer.name for layer in report.model.layers] == NET_LAYERS
    # the content address covers the weights: the normalised tar of the model and its data
    assert report.model.sha256 == tar_sha256([(p.name, p) for p in sorted(folder.iterdir())])
    probes = report.analyses["linear_probe"]["layers"]
    assert [row["layer"] for row in probes] == NET_LAYERS
    assert all(0.0 <= row["test_accuracy"] <= 1.0 for row in probes)


def test_a_model_without_its_data_files_is_refused_naming_the_fix(exports, tmp_path):
    lonely = tmp_path / "cnn.onnx"
    lonely.write_bytes(exports["dynamo"].read_bytes())
    with pytest.raises(ModelFormatError) as refused:
        load_model(lonely, device="cpu")
    assert "external data 'cnn.onnx.data', which is not in the model's folder" in \
        str(refused.value)
    with pytest.raises(ModelFormatError) as refused:  # an upload: its data files come in it
        load_model(exports["dynamo"], device="cpu", data_beside=False)
    assert "as external data, and no data files came with it; upload the .onnx with its data " \
           "files (several file parts, or a .zip or .tar of the export folder)" in \
        str(refused.value)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    """The API in-process, with a worker inspecting uploads in a thread."""
    settings = embedded_settings(tmp_path / "service", max_upload_bytes=1024**2)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as api, inspector(settings):
        yield api, settings


@pytest.mark.slow
def test_over_http_as_file_parts_and_as_a_zip(exports, service):
    """Several file parts are stored as the normalised tar (the CLI's content address), a
    zip as it came; both list the module paths, and a job on the parts runs."""
    api, settings = service
    files = _export_files(exports)
    parts = api.post("/v1/models", files=[("file", item) for item in files])
    assert parts.status_code == 201, parts.text
    body = parts.json()
    folder = exports["dynamo"].parent
    assert body["sha256"] == tar_sha256([(p.name, p) for p in sorted(folder.iterdir())])
    assert body["name"] == "cnn.onnx" and body["format"] == "onnx"
    assert [layer["name"] for layer in body["layers"]] == NET_LAYERS

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in files:
            zipped.writestr(f"export/{name}", data)
    zipped_upload = api.post("/v1/models", files={"file": ("export.zip", archive.getvalue())})
    assert zipped_upload.status_code == 201, zipped_upload.text
    assert zipped_upload.json()["sha256"] == hashlib.sha256(archive.getvalue()).hexdigest()
    assert zipped_upload.json()["layers"] == body["layers"]

    created = api.post("/v1/jobs", json={"model_id": body["id"], "dataset": "builtin:digits",
                                         "max_samples": 100,
                                         "analyses": [{"kind": "linear_probe"}]})
    assert created.status_code == 202, created.text
    JobRun(WorkerContext(settings), created.json()["id"]).run()
    report = api.get(f"/v1/jobs/{created.json()['id']}/report")
    assert report.status_code == 200, api.get(f"/v1/jobs/{created.json()['id']}").text
    assert report.json()["model"]["sha256"] == body["sha256"]
    assert [r["layer"] for r in report.json()["analyses"]["linear_probe"]["layers"]] == \
        NET_LAYERS


# --- hostile uploads -----------------------------------------------------------------------

def _zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def _tar(entries: dict[str, bytes], links: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def _external_model(location: str) -> bytes:
    """y = x @ w, with w (4, 3) stored at ``location``."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.0] * 12)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        w.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


WEIGHTS = np.arange(12, dtype=np.float32).tobytes()
HOSTILE = {
    "a traversal entry": (_zip({"m.onnx": _external_model("w.bin"), "../w.bin": WEIGHTS}),
                          "unsafe entry name: '../w.bin' leads out of its folder"),
    "an absolute entry": (_zip({"m.onnx": _external_model("w.bin"), "/tmp/w.bin": WEIGHTS}),
                          "unsafe entry name: '/tmp/w.bin' is an absolute path"),
    "a zip symlink": (_zip({"m.onnx": _external_model("w.bin")}, {"w.bin": "/etc/passwd"}),
                      "holds a symbolic link, 'w.bin'"),
    "a tar symlink": (_tar({"m.onnx": _external_model("w.bin")}, {"w.bin": "/etc/passwd"}),
                      "holds a link, 'w.bin'"),
    "a location out of the folder": (
        _zip({"m/m.onnx": _external_model("../w.bin"), "w.bin": WEIGHTS}),
        "refers to external data '../w.bin' leads out of its folder"),
    "an absolute location": (_zip({"m.onnx": _external_model("/etc/passwd")}),
                             "refers to external data '/etc/passwd' is an absolute path"),
    "two models": (_zip({"a.onnx": _external_model("w.bin"), "b.onnx": _external_model("w.bin"),
                         "w.bin": WEIGHTS}), "holds 2 ONNX models (a.onnx, b.onnx)"),
    "a compression bomb": (_zip({"m.onnx": _external_model("w.bin"), "w.bin": WEIGHTS,
                                 "pad.bin": bytes(4 * 1024**2)}),
                           "expands to more than 1 MiB"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_unread(case, tmp_path):
    data, expected = HOSTILE[case]
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError) as refused:
        load_model(path, device="cpu", max_bytes=1024**2)
    assert expected in str(refused.value) and len(str(refused.value).splitlines()) == 1


def test_a_good_archive_loads_and_its_weights_are_read(tmp_path):
    path = tmp_path / "upload.tar"
    path.write_bytes(_tar({"m/m.onnx": _external_model("w.bin"), "m/w.bin": WEIGHTS}, {}))
    model = load_model(path, device="cpu")
    x = np.eye(4, dtype=np.float32)
    np.testing.assert_array_equal(model.capture(x, ["fc"])["fc"], np.arange(12).reshape(4, 3))


def test_data_files_resolve_only_in_the_model_folder_on_the_command_line(tmp_path):
    (tmp_path / "secret.bin").write_bytes(WEIGHTS)
    folder = tmp_path / "model"
    folder.mkdir()
    cases = {"../secret.bin": "leads out of its folder",
             str(tmp_path / "secret.bin"): "is an absolute path",
             "link.bin": "goes through a symbolic link"}
    os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    for location, expected in cases.items():
        (folder / "m.onnx").write_bytes(_external_model(location))
        with pytest.raises(ModelFormatError, match=expected):
            load_model(folder / "m.onnx", device="cpu")


@pytest.mark.slow
def test_hostile_uploads_are_refused_over_http(service):
    api, _ = service
    for case in ("a traversal entry", "a compression bomb"):  # the rest: as in the engine
        data, expected = HOSTILE[case]
        answer = api.post("/v1/models", files={"file": ("upload.zip", data)})
        assert answer.status_code == 422, answer.text
        assert expected in answer.json()["detail"], answer.json()["detail"]
    parts = [("file", ("m.onnx", _external_model("w.bin"))), ("file", ("../w.bin", WEIGHTS))]
    answer = api.post("/v1/models", files=parts)
    assert answer.status_code == 422
    assert "file part '../w.bin' leads out of its folder" in answer.json()["detail"]


# --- 2. layer names by module path ---------------------------------------------------------

def test_names_by_module_path_are_equal_across_exporters(exports, net):
    models = {kind: load_model(path, input_shape=SHAPE, device="cpu")
              for kind, path in exports.items()}
    for kind, model in models.items():
        assert model.layer_names == NET_LAYERS, kind
    node_names = [node.name for node in onnx.load(exports["dynamo"]).graph.node]
    assert "features.1.conv" not in node_names  # the names come from the node metadata
    assert [layer.op for layer in models["dynamo"].layers][:5] == [
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Block"]  # the module classes it records
    x = np.random.default_rng(0).random((5, *SHAPE), dtype=np.float32)
    captured = {kind: model.capture(x, NET_LAYERS) for kind, model in models.items()}
    for name in NET_LAYERS:  # same names, same values (atol 1e-5)
        np.testing.assert_allclose(captured["dynamo"][name], captured["torchscript"][name],
                                   atol=1e-5, err_msg=name)
        np.testing.assert_allclose(captured["legacy"][name], captured["torchscript"][name],
                                   atol=1e-5, err_msg=name)
    chosen = select_layers(models["dynamo"].layers, ["features.1*"])
    assert [layer.name for layer in chosen] == ["features.1.conv", "features.1.act", "features.1"]



class CalledTwice(nn.Module):
    """``act`` and ``blocks`` called twice; ``fc_1`` a real module beside ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 4)
        self.fc_1 = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.blocks(self.blocks(x)))
        return self.fc_1(self.act(self.fc(x)))


def test_a_second_call_is_named_alike_by_every_exporter(tmp_path):
    """The TorchScript-based exporter scopes a second call ``act_1``: named ``act#2`` as the
    other formats name it, while ``fc_1``, which has weights of its own, keeps its name."""
    torch.manual_seed(0)
    model, example = CalledTwice().eval(), (torch.zeros(2, 4),)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(tmp_path / "dynamo.onnx"))
        torch.onnx.export(model, example, str(tmp_path / "legacy.onnx"), dynamo=False)
    torch.jit.save(torch.jit.trace(model, example), str(tmp_path / "m.pt"))
    expected = ["blocks.0", "blocks.1", "blocks.0#2", "blocks.1#2", "act", "fc", "act#2", "fc_1"]
    for name in ("dynamo.onnx", "legacy.onnx", "m.pt"):
        names = load_model(tmp_path / name, input_shape=(4,), device="cpu").layer_names
        assert names == expected, name

# --- 12. non-tensor outputs ----------------------------------------------------------------

def _skl2onnx_mlp(path: Path):  # type: ignore[no-untyped-def]
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    iris = resolve_dataset("builtin:iris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)
        classifier.fit(iris.x, iris.y)
    model = to_onnx(classifier, iris.x[:1].astype(np.float32))  # defaults: label + ZipMap
    path.write_bytes(model.SerializeToString())
    return classifier, model, iris


def test_skl2onnx_zipmap_output_is_ignored_and_the_mlp_loads(tmp_path):
    classifier, proto, iris = _skl2onnx_mlp(tmp_path / "mlp.onnx")
    assert [o.type.WhichOneof("value") for o in proto.graph.output] == ["tensor_type",
                                                                        "sequence_type"]
    model = load_model(tmp_path / "mlp.onnx", device="cpu")
    ops = [layer.op for layer in model.layers]
    assert "ZipMap" not in ops and ops[-1] == "Softmax"
    x = iris.x[:50].astype(np.float32)
    probabilities = model.capture(x, [model.layer_names[-1]])[model.layer_names[-1]]
    np.testing.assert_allclose(probabilities, classifier.predict_proba(iris.x[:50]), atol=1e-5)
    hidden = model.capture(x, ["Relu"])["Relu"]
    expected = np.maximum(iris.x[:50] @ classifier.coefs_[0] + classifier.intercepts_[0], 0)
    np.testing.assert_allclose(hidden, expected, atol=1e-4)
    options = JobOptions(analyses=parse_spec([{"kind": "linear_probe"}]), device="cpu")
    report = analyze(tmp_path / "mlp.onnx", iris, tmp_path / "out", options)
    rows = report.analyses["linear_probe"]["layers"]
    assert [row["layer"] for row in rows] == model.layer_names
    assert rows[-1]["test_accuracy"] >= 0.9  # the class probabilities separate iris


# --- 11. fixed batch -----------------------------------------------------------------------

def _batch_one_model(path: Path) -> dict[str, np.ndarray]:
    """x (1, 4) -> fc -> relu -> out (1, 3); beside it a state concatenated along axis 0,
    (2, 4), which only looks like a batch of 2."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((4, 6)).astype(np.float32),
               "w2": rng.standard_normal((6, 3)).astype(np.float32),
               "state": rng.standard_normal((1, 4)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Concat", ["x", "state"], ["stacked"], name="stack", axis=0),
             helper.make_node("ReduceSum", ["stacked", "axis0"], ["summed"], name="sum",
                              keepdims=1),
             helper.make_node("MatMul", ["r", "w2"], ["o"], name="out_fc"),
             helper.make_node("MatMul", ["summed", "w1"], ["s"], name="state_fc"),
             helper.make_node("ReduceSum", ["s"], ["t"], name="state_total", keepdims=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()]
        + [numpy_helper.from_array(np.array([0]), "axis0")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    path.write_bytes(model.SerializeToString())
    return weights


def test_a_model_fixed_at_batch_one_probes_one_and_captures_fifty(tmp_path):
    weights = _batch_one_model(tmp_path / "b1.onnx")
    model = load_model(tmp_path / "b1.onnx", device="cpu")
    assert {layer.name: layer.shape for layer in model.layers} == {
        "fc": (6,), "relu": (6,), "sum": (4,), "out_fc": (3,), "state_fc": (6,),
        "state_total": (1,)}  # not the stacked (2, 4), which only looks like a batch of 2
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    captured = model.capture(x, model.layer_names)  # 50 runs of one sample (atol 1e-5)
    relu = np.maximum(x @ weights["w1"], 0)
    np.testing.assert_allclose(captured["relu"], relu, atol=1e-5)
    np.testing.assert_allclose(captured["out_fc"], relu @ weights["w2"], atol=1e-5)
    np.testing.assert_allclose(captured["sum"], x + weights["state"], atol=1e-5)


# --- 10. control flow and models without layers -------------------------------------------

def _if_model(path: Path, condition: str) -> np.ndarray:
    """Every node inside an If: then relu(x @ w), else -x @ w. ``condition``: ``constant``
    (an initializer) or ``input`` (sum(x) > 0)."""
    w = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"], name="then/fc"),
         helper.make_node("Relu", ["mm"], ["then_out"], name="then/relu")], "then", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, ["n", 5])])
    otherwise = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["negated"], name="else/neg"),
         helper.make_node("MatMul", ["negated", "w"], ["else_out"], name="else/fc")], "else",
        [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, ["n", 5])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then,
                              else_branch=otherwise)]
    initializers = [numpy_helper.from_array(w, "w")]
    if condition == "constant":
        initializers.append(numpy_helper.from_array(np.array(True), "cond"))
    else:
        nodes[:0] = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                     helper.make_node("Greater", ["total", "zero"], ["cond"])]
        initializers.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return w


def test_an_if_with_a_constant_condition_lists_the_layers_of_its_branch(tmp_path):
    w = _if_model(tmp_path / "if.onnx", "constant")
    model = load_model(tmp_path / "if.onnx", device="cpu")
    assert model.layer_names == ["then/fc", "then/relu"]
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    np.testing.assert_allclose(model.capture(x, ["then/relu"])["then/relu"],
                               np.maximum(x @ w, 0), atol=1e-5)


def test_layers_inside_data_dependent_control_flow_are_refused_with_the_reason(tmp_path):
    _if_model(tmp_path / "if.onnx", "input")
    with pytest.raises(ModelFormatError) as refused:
        load_model(tmp_path / "if.onnx", device="cpu")
    assert "layers sit inside control flow (If node 'branch'" in str(refused.value)


class Functional(nn.Module):
    """No submodule: nothing TorchScript can name a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.weight)


@pytest.mark.slow
def test_a_model_with_no_layers_is_exit_2_with_the_reason(tmp_path, capsys):
    torch.jit.save(torch.jit.script(Functional()), str(tmp_path / "functional.pt"))
    code, err = _analyze(capsys, tmp_path / "functional.pt", tmp_path / "out", "--dataset",
                         "builtin:iris", "--input-shape", "4")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "has no layers: layerlens lists the outputs of a TorchScript model's submodules" in err
    constant = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(
            np.ones((1, 3), np.float32)))], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    (tmp_path / "constant.onnx").write_bytes(helper.make_model(
        constant, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    ).SerializeToString())
    with pytest.raises(ModelFormatError, match="has no layers"):
        load_model(tmp_path / "constant.onnx", device="cpu")
