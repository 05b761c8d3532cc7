"""Over HTTP a refused upload names the API's fields (``input_shape``) and the file as it was
uploaded (``my-net.onnx``), never ``layerlens analyze``'s flags (``--input-shape``) nor the
worker's scratch file (``model.bin``); the command line keeps its flags.

Inspection runs for real: a worker's ``inspect_model``/``inspect_dataset`` in a thread of
this process, each opening the file in its sandboxed child, while the upload request waits.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from torch import nn

from infra.config import Settings
from infra.db.models import Dataset, Model
from layerlens.errors import InputError
from layerlens.models import load_model
from layerlens_client.cli import main as layerlens_cli
from workers.tasks import WorkerContext, inspect_dataset, inspect_model

SCRATCH_NAMES = ("model.bin", "data.npz", "data.csv", "dataset.npz")


@contextmanager
def inspector(settings: Settings) -> Iterator[None]:
    """A worker inspecting every upload that waits for it, until the block ends."""
    ctx = WorkerContext(settings)
    done = threading.Event()

    def work() -> None:
        while not done.is_set():
            with ctx.sessions() as session:
                models = session.scalars(select(Model.id).where(
                    Model.status == "inspecting")).all()
                datasets = session.scalars(select(Dataset.id).where(
                    Dataset.status == "inspecting")).all()
            for model_id in models:
                inspect_model(ctx, model_id)
            for dataset_id in datasets:
                inspect_dataset(ctx, dataset_id)
            done.wait(0.05)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(120)


@pytest.fixture
def torchscript(tmp_path: Path) -> bytes:
    """A TorchScript MLP on 4 features: the file does not record its input shape."""
    torch.manual_seed(0)
    path = tmp_path / "mlp.pt"
    torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))).save(str(path))
    return path.read_bytes()


def _refusal(api, route: str, filename: str, content: bytes,  # type: ignore[no-untyped-def]
             **form: str) -> str:
    answer = api.post(route, files={"file": (filename, content)}, data=form)
    assert answer.status_code == 422, answer.text
    detail = str(answer.json()["detail"])
    for flag in ("--input-shape", "--mean", "--std", "--memory-budget", "--max-samples"):
        assert flag not in detail, detail
    for scratch in SCRATCH_NAMES:
        assert not re.search(rf"(?<![\w-]){re.escape(scratch)}", detail), detail
    return detail


def test_upload_refusals_name_api_fields_and_the_uploaded_file(api, settings, torchscript):
    with inspector(settings):
        no_shape = _refusal(api, "/v1/models", "my-net.pt", torchscript)
        wrong_shape = _refusal(api, "/v1/models", "my-net.pt", torchscript, input_shape="3")
        broken = _refusal(api, "/v1/models", "my-net.onnx", b"\x08\x07not an onnx model" * 40)
        named = _refusal(api, "/v1/models", "x.onnx", b"junk" * 100, name="prod-classifier")
        dataset = _refusal(api, "/v1/datasets", "my-data.npz", b"PK\x03\x04 not a zip")
    assert "form field input_shape" in no_shape and "'my-net.pt'" in no_shape
    assert "input_shape" in wrong_shape and "(3,)" in wrong_shape
    assert "model file 'my-net.onnx' is neither an ONNX model" in broken
    assert "'prod-classifier'" in named  # the name it was uploaded under
    assert dataset.startswith("my-data.npz: not a readable .npz file")


def test_the_engine_names_options_once_and_each_front_end_spells_them(tmp_path, torchscript):
    path = tmp_path / "blob"
    path.write_bytes(torchscript)
    with pytest.raises(InputError) as raised:
        load_model(path, input_shape=(3,), device="cpu", name="my-net.pt")
    assert raised.value.options == ("input_shape",)
    assert "input_shape (e.g." in str(raised.value) and "--" not in str(raised.value)
    assert "--input-shape (e.g." in raised.value.spelled(lambda f: "--" + f.replace("_", "-"))


def test_the_command_line_says_its_flags(capsys, tmp_path, torchscript):
    model = tmp_path / "my-net.pt"
    model.write_bytes(torchscript)
    code = layerlens_cli(["analyze", str(model), "--dataset", "builtin:wine",
                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("layerlens: error: ") and len(err.splitlines()) == 1
    assert "--input-shape" in err and "input_shape" not in err
