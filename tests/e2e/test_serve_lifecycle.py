"""``layerlens serve`` takes its worker processes with it, however it is stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e import launch

pytestmark = pytest.mark.slow


def _workers(serve_pid: int) -> list[int]:
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    return [int(pid) for pid in children
            if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_stopping_serve_stops_its_workers(tmp_path, how):
    with launch.embedded(tmp_path) as service:
        serve = service.processes[0]
        workers = _workers(serve.pid)
        assert len(workers) == 2
        said = (tmp_path / "logs" / "serve.log").read_text()
        assert "no API keys needed: bound to 127.0.0.1 (loopback only)" in said
        os.kill(serve.pid, how)
        serve.wait(30)
        left = _gone_within(workers, 30)
        for pid in left:  # do not leak them into the rest of the run
            os.killpg(pid, signal.SIGKILL)
        assert not left, f"workers {left} outlived serve after {how.name}"
