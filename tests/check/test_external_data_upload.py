"""The light client finds an ONNX model's external data files from its protobuf (no onnx
package) and uploads them with it. Models written by onnx itself, with tensors where
exporters put them (initializers, subgraph attributes); the answer is onnx's own walk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors, convert_model_to_external_data

from layerlens_client._base import _data_files_beside
from layerlens_client._onnx_data import external_data_files


def _model() -> onnx.ModelProto:
    """y = x @ W, then If(cond) whose branches add a Constant tensor (a subgraph attribute)."""
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    cond = numpy_helper.from_array(np.array(True), "cond")

    def branch(name: str, value: float) -> onnx.GraphProto:
        constant = helper.make_node("Constant", [], [f"{name}_c"], value=numpy_helper.from_array(
            np.full(3, value, np.float32), f"{name}_value"))
        add = helper.make_node("Add", ["h", f"{name}_c"], [f"{name}_out"])
        return helper.make_graph([constant, add], name, [], [
            helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [None, 3])])

    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 1.0),
                              else_branch=branch("else", -1.0))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [weight, cond])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnx_says(path: Path) -> set[str]:
    model = onnx.load(path, load_external_data=False)
    return {entry.value for tensor in _get_all_tensors(model)
            for entry in tensor.external_data if entry.key == "location"}


def test_every_tensor_file_is_found_in_graphs_and_subgraphs(tmp_path: Path):
    model = _model()
    convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=0,
                                   convert_attribute=True)  # attribute tensors too
    onnx.save_model(model, tmp_path / "m.onnx")
    found = external_data_files(tmp_path / "m.onnx")
    assert len(found) == 4 and set(found) == _onnx_says(tmp_path / "m.onnx")
    assert {"then_value", "else_value"} <= set(found)  # the If branches' Constant tensors


def test_data_files_go_under_their_names_in_the_models_folder(tmp_path: Path):
    (tmp_path / "weights").mkdir()
    onnx.save_model(_model(), tmp_path / "m.onnx", save_as_external_data=True,
                    location="weights/m.bin", size_threshold=0)
    assert _data_files_beside(tmp_path / "m.onnx") == (
        ("weights/m.bin", tmp_path / "weights" / "m.bin"),)
    (tmp_path / "weights" / "m.bin").unlink()  # missing: not sent, the server names it
    assert _data_files_beside(tmp_path / "m.onnx") == ()


def test_self_contained_models_and_other_files_have_none(tmp_path: Path):
    onnx.save_model(_model(), tmp_path / "m.onnx")
    (tmp_path / "m.pt").write_bytes(b"PK\x03\x04" + bytes(64))  # a TorchScript zip's start
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07\x3a\xff\xff")  # a field past the end
    for name in ("m.onnx", "m.pt", "bad.onnx"):
        assert external_data_files(tmp_path / name) == []
