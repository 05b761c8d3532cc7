"""Every bad input: exit status 2 and one clear line on stderr, never a traceback."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from layerlens_client.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerlens: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def analyze(capsys, model: Path, tmp_path: Path, *extra: str,
            dataset: str = "builtin:digits") -> tuple[int, str]:
    return run_cli(capsys, "analyze", str(model), "--dataset", dataset,
                   "--out", str(tmp_path / "out"), *extra)


def test_truncated_onnx(capsys, cnn_files, tmp_path):
    data = Path(cnn_files["onnx"]).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*analyze(capsys, truncated, tmp_path), "truncated.onnx")


def test_random_bytes(capsys, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_error(*analyze(capsys, junk, tmp_path),
                          "neither an ONNX model nor a TorchScript archive")


def test_empty_file(capsys, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_one_line_error(*analyze(capsys, empty, tmp_path), "is empty")


def test_missing_file(capsys, tmp_path):
    assert_one_line_error(*analyze(capsys, tmp_path / "nope.onnx", tmp_path), "does not exist")


def test_onnx_without_float_outputs(capsys, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["label"], axis=1, name="argmax")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["n", 1])])
    path = tmp_path / "argmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert_one_line_error(*analyze(capsys, path, tmp_path), "has no layers",
                          "no node output is a float tensor")


class _Payload:
    """Unpickling this creates the sentinel file: proof that a pickle ran code."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def test_torch_save_zip_is_refused_without_unpickling(capsys, tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:  # the layout torch.save writes
        archive.writestr("model/data.pkl", pickle.dumps(_Payload(sentinel)))
        archive.writestr("model/version", "3\n")
        archive.writestr("model/byteorder", "little")
    code, err = analyze(capsys, path, tmp_path)
    assert_one_line_error(code, err, "torch.save", "not a TorchScript archive")
    assert not sentinel.exists()


def test_a_compression_bomb_is_refused_before_anything_reads_it(capsys, tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/code/__torch__.py", "")
        archive.writestr("model/constants.pkl", b"")
        with archive.open("model/data/0", "w") as entry:  # 256 MiB of zeros, ~250 KiB packed
            for _ in range(256):
                entry.write(bytes(1024**2))
    assert path.stat().st_size < 1024**2
    assert_one_line_error(*analyze(capsys, path, tmp_path), "compression bomb")


def test_real_torch_save_file_is_refused(capsys, tmp_path, trained_cnn):
    path = tmp_path / "state.pt"
    torch.save(trained_cnn, path)
    assert_one_line_error(*analyze(capsys, path, tmp_path), "not a TorchScript archive")


def test_legacy_pickle_renamed_pt_is_refused_without_unpickling(capsys, tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps(_Payload(sentinel), protocol=2))
    assert_one_line_error(*analyze(capsys, path, tmp_path), "pickle", "not a TorchScript")
    assert not sentinel.exists()


def test_torchscript_input_shape_does_not_fit_dataset(capsys, cnn_files, tmp_path):
    # the digits CNN wants (1, 8, 8); iris samples have 4 values
    code, err = analyze(capsys, Path(cnn_files["torchscript"]), tmp_path, dataset="builtin:iris")
    assert_one_line_error(code, err, "(4,)")


def test_explicit_input_shape_that_does_not_fit_dataset(capsys, cnn_files, tmp_path):
    code, err = analyze(capsys, Path(cnn_files["torchscript"]), tmp_path, "--input-shape",
                        "1,8,8", dataset="builtin:iris")
    assert_one_line_error(code, err, "(1, 8, 8)", "builtin:iris")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_unknown_layer(capsys, cnn_files, tmp_path, fmt):
    code, err = analyze(capsys, Path(cnn_files[fmt]), tmp_path, "--layers", "no_such_layer*")
    assert_one_line_error(code, err, "no_such_layer*")


def test_unknown_dataset(capsys, cnn_files, tmp_path):
    code, err = analyze(capsys, Path(cnn_files["onnx"]), tmp_path, dataset="builtin:mnist")
    assert_one_line_error(code, err, "builtin:mnist", "builtin:digits")


def test_npz_without_x_or_y(capsys, cnn_files, tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, features=np.zeros((4, 64)), labels=np.zeros(4))
    code, err = analyze(capsys, Path(cnn_files["onnx"]), tmp_path, dataset=str(path))
    assert_one_line_error(code, err, "no array x or y")


def test_npz_with_object_array(capsys, cnn_files, tmp_path):
    path = tmp_path / "data.npz"
    y = np.empty(4, dtype=object)
    y[:] = [{"a": 1}, 2, "3", None]
    np.savez(path, x=np.zeros((4, 64)), y=y)
    code, err = analyze(capsys, Path(cnn_files["onnx"]), tmp_path, dataset=str(path))
    assert_one_line_error(code, err, "object")


def test_bad_spec_key(capsys, cnn_files, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('{"analyses": [{"kind": "projection", "perplexity_typo": 3}]}')
    code, err = analyze(capsys, Path(cnn_files["onnx"]), tmp_path, "--spec", str(spec))
    assert_one_line_error(code, err, "perplexity_typo")


def test_bad_flag_value(capsys, cnn_files, tmp_path):
    code, err = analyze(capsys, Path(cnn_files["onnx"]), tmp_path, "--input-shape", "1,x,8")
    assert_one_line_error(code, err, "--input-shape")


def test_entry_point_prints_one_line_and_exits_2(tmp_path):
    """The installed command, as a real process: no traceback reaches the terminal."""
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "app", "analyze", str(junk), "--dataset", "builtin:iris",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "LAYERLENS_DEBUG": ""})
    assert_one_line_error(result.returncode, result.stderr, "junk.pt")
    assert not (tmp_path / "out").exists()
