"""Start the real service processes for end-to-end tests and benchmarks.

``embedded``: ``layerlens serve`` (uvicorn + two Celery worker processes on
SQLite, the filesystem broker and a local artifact folder).
``production``: ``layerlens migrate``, ``layerlens api`` and two
``layerlens worker`` processes on PostgreSQL and Redis (and optionally an
S3-compatible store), as docker-compose runs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

POSTGRES_ADMIN_URL = os.environ.get("LAYERLENS_TEST_POSTGRES",
                                    "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LAYERLENS_TEST_REDIS", "redis://127.0.0.1:6379")
LAYERLENS = [sys.executable, "-m", "app"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_s3() -> Iterator[str]:
    """An S3-compatible server (moto's; MinIO has no pip package) on a free port, with this
    process's AWS credentials set for it meanwhile; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "layerlens", "AWS_SECRET_ACCESS_KEY": "layerlens-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@dataclass
class Service:
    """Running service processes; ``url`` is the API's base URL."""

    url: str
    data_dir: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api_key: str | None = None  # production: a key of the tenant "e2e"
    #: status codes of every response any ``client()`` received
    statuses: Counter[int] = field(default_factory=Counter)

    def client(self, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers,
                            event_hooks={"response": [self._count]})

    def _count(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1

    def server_errors(self) -> int:
        """Responses with a 5xx status other than 503 (a deliberate "unavailable")."""
        return sum(n for code, n in self.statuses.items() if code >= 500 and code != 503)

    def logs(self) -> str:
        parts = []
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*LAYERLENS, *args], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(service: Service, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        for process in service.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a service process exited ({process.returncode}):\n"
                                   + service.logs())
        try:
            answer = httpx.get(f"{service.url}/readyz", timeout=2)
            if answer.status_code == 200:
                return
            last = answer.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready within {timeout_s} s ({last}):\n"
                       + service.logs())


def base_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERLENS_")}
    env.update({"LAYERLENS_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "2",
                **{f"LAYERLENS_{k.upper()}": v for k, v in settings.items()}})
    return env


@contextmanager
def embedded(data_dir: Path, **settings: str) -> Iterator[Service]:
    """``layerlens serve`` on a fresh data folder."""
    port = free_port()
    env = base_env(data_dir, **settings)
    service = Service(f"http://127.0.0.1:{port}", data_dir, env)
    service.processes.append(_spawn(["serve", "--port", str(port)], env,
                                    data_dir / "logs" / "serve.log"))
    try:
        wait_ready(service)
        yield service
    finally:
        service.stop()


def require(reason: str | None) -> None:
    """Skip with ``reason`` (a missing server, say); under CI=true, fail instead."""
    if reason is not None:
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def upload_model(service: Service, path: Path) -> str:
    """Upload a model file; its id (the upload must be accepted)."""
    with service.client() as client:
        answer = client.post("/v1/models", files={"file": (path.name, path.read_bytes())})
    if answer.status_code != 201:
        raise AssertionError(f"upload of {path.name}: {answer.status_code} {answer.text}")
    return str(answer.json()["id"])


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unavailable: {exc}"


def redis_available() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return None
    except Exception as exc:
        return f"Redis at {REDIS_URL} is unavailable: {exc}"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; its SQLAlchemy URL. Dropped afterwards."""
    import psycopg

    name = f"layerlens_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_redis_db() -> Iterator[str]:
    """A Redis database number nobody else in this run uses, emptied before and after."""
    import redis

    number = 1 + uuid.uuid4().int % 14
    url = f"{REDIS_URL}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()


@contextmanager
def production(data_dir: Path, database_url: str, broker_url: str,
               **settings: str) -> Iterator[Service]:
    """``layerlens migrate`` and a key, then ``api`` and a jobs and an inspect ``worker``, as
    compose does; the API requires keys, and ``service.client()`` sends the key."""
    port = free_port()
    env = base_env(data_dir, database_url=database_url, broker_url=broker_url, **settings)
    logs = data_dir / "logs"
    migrated = subprocess.run([*LAYERLENS, "migrate"], env=env, capture_output=True, text=True,
                              timeout=120)
    if migrated.returncode != 0:
        raise RuntimeError(f"layerlens migrate failed:\n{migrated.stderr}")
    issued = subprocess.run([*LAYERLENS, "keys", "create", "--tenant", "e2e"], env=env,
                            capture_output=True, text=True, timeout=120)
    if issued.returncode != 0:
        raise RuntimeError(f"layerlens keys create failed:\n{issued.stderr}")
    service = Service(f"http://127.0.0.1:{port}", data_dir, env,
                      api_key=issued.stdout.strip().splitlines()[-1])
    service.processes += [
        _spawn(["api", "--port", str(port)], env, logs / "api.log"),
        _spawn(["worker", "--queues", "jobs"], env, logs / "worker-jobs.log"),
        _spawn(["worker", "--queues", "inspect"], env, logs / "worker-inspect.log"),
    ]
    try:
        wait_ready(service)
        yield service
    finally:
        service.stop()
        shutil.rmtree(data_dir / "storage", ignore_errors=True)


def wait_for_job(client: httpx.Client, job_id: str, timeout_s: float = 600.0,
                 until: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
                 ) -> dict[str, object]:
    """Poll a job until its status is in ``until``; its last document."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in until:
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s: {job}")
        time.sleep(0.25)
