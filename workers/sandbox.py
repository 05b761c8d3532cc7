"""Run :mod:`workers.runner` in a fresh, confined child process and follow its events.

The child gets the job's scratch folder (the only place it may write), an
environment without any ``LAYERLENS_*`` setting (no database, broker or
storage credentials), its own process group, resource limits, no network,
and a file system it can barely read (:mod:`workers.confine`); it dies with
its parent. The parent reads its JSON events, and can kill it at any moment
(cancel, time limit).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.confine import Limits, preexec

#: Environment variables the child may keep: locale, thread counts, CUDA device choice.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
STDERR_TAIL = 4000
#: Exit codes of a child stopped by RLIMIT_CPU (SIGXCPU, then SIGKILL at the hard limit).
CPU_LIMIT_CODES = (-signal.SIGXCPU,)


def child_env(scratch: Path) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env.update(HOME=str(scratch), TMPDIR=str(scratch), MPLCONFIGDIR=str(scratch / ".mpl"),
               NUMBA_CACHE_DIR=str(scratch / ".numba"), PYTHONDONTWRITEBYTECODE="1")
    return env


@dataclass
class ChildOutcome:
    """How the child ended: ``result`` on success, else ``error`` (refused input) or a crash."""

    returncode: int | None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_reason: str = "invalid_input"  # or "memory", from the child's error event
    killed_because: str | None = None  # "canceled" | "timeout" | None
    stderr_tail: str = ""

    @property
    def failure_reason(self) -> str:
        """``timeout``, ``memory``, ``invalid_input`` or ``crashed``."""
        if self.killed_because == "timeout" or self.returncode in CPU_LIMIT_CODES:
            return "timeout"
        if self.error is not None:
            return self.error_reason
        if self.returncode == -signal.SIGKILL:
            return "memory"  # not killed by us: the kernel's out-of-memory killer
        return "crashed"

    @property
    def crash_summary(self) -> str:
        if self.returncode in CPU_LIMIT_CODES:
            return "the analysis used up its CPU time and was stopped"
        if self.returncode is not None and self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            return f"the analysis process was killed by {name}"
        last = [line for line in self.stderr_tail.splitlines() if line.strip()]
        return (f"the analysis process failed (exit {self.returncode})"
                + (f": {last[-1].strip()}" if last else ""))


@dataclass
class Child:
    """One run of ``python -m workers.runner ARGS`` in ``scratch``, writing only ``writable``."""

    args: list[str]
    scratch: Path
    writable: Path
    limits: Limits
    process: subprocess.Popen[bytes] = field(init=False)
    _events: queue.Queue[dict[str, Any] | None] = field(init=False, default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._stderr = (self.scratch / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.runner", *self.args], cwd=self.scratch,
            env=child_env(self.scratch), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, start_new_session=True,
            preexec_fn=preexec(self.limits, [str(self.writable)]))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # stray prints of the model's own code
            if isinstance(event, dict):
                self._events.put(event)
        self._events.put(None)

    def events(self, poll_s: float) -> Iterator[dict[str, Any] | None]:
        """Events as they come; None every ``poll_s`` seconds without one. Ends at exit."""
        while True:
            try:
                event = self._events.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if event is None:
                return
            yield event

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout)
        self._stderr.close()
        return code

    def stderr_tail(self) -> str:
        path = self.scratch / "stderr.log"
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - STDERR_TAIL))
            return handle.read().decode("utf-8", "replace")


def run_child(args: list[str], folder: Path, *, time_limit_s: float, limits: Limits,
              on_event: Any = None, should_stop: Any = None, poll_s: float = 0.25) -> ChildOutcome:
    """Run the child in ``folder/run`` to its end, killing it past ``time_limit_s`` or when
    ``should_stop()``; it may write only inside ``folder``.

    ``on_event(event)`` sees every progress event; ``should_stop()`` is asked
    every ``poll_s`` seconds at most (it may be rate-limited by the caller).
    """
    child = Child(args, folder / "run", folder, limits)
    deadline = time.monotonic() + time_limit_s
    outcome = ChildOutcome(returncode=None)
    try:
        for event in child.events(poll_s):
            if event is not None:
                kind = event.get("event")
                if kind == "result":
                    outcome.result = event
                elif kind == "error":
                    outcome.error = str(event.get("message", "invalid input"))
                    outcome.error_reason = str(event.get("reason", "invalid_input"))
                elif on_event is not None:
                    on_event(event)
            if time.monotonic() > deadline:
                outcome.killed_because = "timeout"
            elif should_stop is not None and should_stop():
                outcome.killed_because = "canceled"
            if outcome.killed_because:
                break
        else:  # stdout closed: the child is exiting
            try:
                child.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                outcome.killed_because = "timeout"
    finally:
        child.kill()  # the whole group: nothing the model started survives it
        outcome.returncode = child.wait()
    outcome.stderr_tail = child.stderr_tail()
    return outcome
