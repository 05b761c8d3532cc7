"""Stop and start this machine's real PostgreSQL and Redis, for the fault tests.

Both are restarted exactly as they ran (Redis: its executable and the settings it
reports; PostgreSQL: its Debian cluster, with ``pg_ctlcluster``). ``stopped()``
always starts the server again, even when the test fails meanwhile.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Settings a restarted Redis keeps (read with CONFIG GET before it is killed).
REDIS_SETTINGS = ("port", "bind", "dir", "logfile", "save", "appendonly", "protected-mode",
                  "databases")


class _Server:
    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server down for the block; up again afterwards, however the block ends."""
        self.stop()
        try:
            yield
        finally:
            if not self._answers():
                self.start()


class RedisServer(_Server):
    """The Redis at ``url``: killed with SIGKILL, started again with the same settings."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        info = self.client.info("server")
        self.pid = int(info["process_id"])
        reported = str(info.get("executable") or "")
        self.executable = reported if Path(reported).is_file() else shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError("cannot find the redis-server executable to restart Redis")
        self.settings = {key: str(self.client.config_get(key).get(key, ""))
                         for key in REDIS_SETTINGS}

    def argv(self) -> list[str]:
        args = [self.executable, "--daemonize", "yes"]
        for key, value in self.settings.items():
            args += [f"--{key}", *(value.split() if key == "bind" else [value])]
        return args

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        _wait(lambda: not _alive(self.pid), "Redis to die")

    def start(self) -> None:
        subprocess.run(self.argv(), check=True, capture_output=True, timeout=30)
        _wait(self._answers, "Redis to answer")
        self.pid = int(self.client.info("server")["process_id"])

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False



class PostgresServer(_Server):
    """The Debian PostgreSQL cluster serving ``port``, stopped (fast) and started again."""

    def __init__(self, port: int = 5432) -> None:
        listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True,
                                 text=True, check=True).stdout
        for line in listing.splitlines():
            version, name, cluster_port, *_ = line.split()
            if int(cluster_port) == port:
                self.cluster = [version, name]
                break
        else:
            raise RuntimeError(f"no PostgreSQL cluster on port {port}: {listing}")
        self.port = port

    def _ctl(self, action: str, *extra: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *self.cluster, action,
                        *extra], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._ctl("start")
        _wait(self._answers, "PostgreSQL to answer")

    def _answers(self) -> bool:
        return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0



def control_unavailable() -> str | None:
    """None when this machine's servers can be stopped and started here, else why not."""
    for tool in ("pg_ctlcluster", "pg_lsclusters", "pg_isready"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: cannot stop and start PostgreSQL"
    if os.geteuid() != 0:
        return "stopping this machine's PostgreSQL and Redis needs root"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.1)
