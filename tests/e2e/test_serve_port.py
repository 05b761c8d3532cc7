"""``layerlens serve --port 0`` and ``layerlens api --port 0`` print the port they bound, and
answer there; a port already in use is refused in one line before anything starts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e import launch

pytestmark = pytest.mark.slow

SERVING = re.compile(r"layerlens: serving http://127\.0\.0\.1:(\d+) ")


@contextmanager
def started(args: list[str], data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = launch.base_env(data_dir)
    log = data_dir / "logs" / f"{args[0]}.log"
    process = launch._spawn(args, env, log)
    try:
        yield process, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _bound_port(process: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        said = log.read_text(errors="replace") if log.exists() else ""
        found = SERVING.search(said)
        if found:
            return int(found.group(1))
        assert process.poll() is None, f"exited {process.returncode}:\n{said}"
        time.sleep(0.1)
    raise AssertionError(f"no 'serving' line within {timeout_s} s:\n{log.read_text()}")


def _healthy(port: int) -> None:
    # the socket listens before the line is printed: the first request waits, never refused
    answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
    assert answer.status_code == 200, answer.text


def test_serve_on_port_0_prints_the_port_it_bound(tmp_path):
    with started(["serve", "--port", "0", "--data-dir", str(tmp_path)], tmp_path) as (
            process, log):
        port = _bound_port(process, log)
        assert port > 0
        _healthy(port)
        # the same port again is refused in one line, before any worker starts
        again = subprocess.run([*launch.LAYERLENS, "serve", "--port", str(port), "--data-dir",
                                str(tmp_path / "other")], env=launch.base_env(tmp_path / "other"),
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 2, again.stderr
        assert again.stderr.strip() == (f"layerlens: error: cannot listen on 127.0.0.1:{port}: "
                                        "Address already in use")
        assert not (tmp_path / "other" / "logs").exists()  # no worker was started


def test_api_on_port_0_prints_the_port_it_bound(tmp_path):
    migrated = subprocess.run([*launch.LAYERLENS, "migrate"], env=launch.base_env(tmp_path),
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    with started(["api", "--port", "0"], tmp_path) as (process, log):
        _healthy(_bound_port(process, log))
