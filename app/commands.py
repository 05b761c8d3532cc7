"""Starting the service's processes: ``layerlens serve`` (API + local Celery workers), ``api``,
``worker``, ``migrate`` and ``keys``."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra.config import Settings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
PR_SET_PDEATHSIG = 1


def migrate(settings: Settings) -> None:
    """``alembic upgrade head`` on the configured database."""
    from infra.db.session import upgrade

    upgrade(settings.database_url)
    print(f"layerlens: database migrated to head ({_where(settings)})", flush=True)


def _where(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


class Refused(ValueError):
    """A configuration the service will not start with (exit 2)."""


def auth_for(settings: Settings, host: str, *, default_off: bool) -> Settings:
    """Keys are required everywhere but loopback; ``serve`` on loopback runs without them
    unless LAYERLENS_AUTH says otherwise. Says which at start."""
    explicit = os.environ.get("LAYERLENS_AUTH")
    if host in LOOPBACK and default_off and explicit is None:
        settings = replace(settings, auth_required=False)
    if not settings.auth_required:
        if host not in LOOPBACK:
            raise Refused(f"LAYERLENS_AUTH=off is allowed only on loopback, not on {host}: "
                          "create keys with `layerlens keys create --tenant NAME`")
        print(f"layerlens: no API keys needed: bound to {host} (loopback only), every caller "
              "is the tenant 'local'; set LAYERLENS_AUTH=required to use keys", flush=True)
    else:
        print("layerlens: API keys required (Authorization: Bearer <key>; "
              "`layerlens keys create --tenant NAME`)", flush=True)
    return settings


def keys(settings: Settings, action: str, *, tenant: str | None, name: str,
         key_id: str | None) -> int:
    """``layerlens keys create|list|revoke``."""
    from infra.db.session import make_engine, require_migrated, session_factory
    from service.auth import create_key, list_keys, revoke_key

    engine = make_engine(settings.database_url)
    require_migrated(engine)
    sessions = session_factory(engine)
    if action == "create":
        if not tenant:
            raise Refused("keys create needs --tenant NAME")
        try:
            issued = create_key(sessions, tenant, name)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        print(f"key id {issued.id} for tenant {issued.tenant} (shown once, store it now):")
        print(issued.key)
    elif action == "list":
        for item_id, owner, label, prefix, revoked in list_keys(sessions):
            state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
            print(f"{item_id}  {owner:<20} {label:<20} {prefix}...  {state}")
    else:
        if not key_id or not revoke_key(sessions, key_id):
            raise Refused(f"no active key '{key_id}' (see `layerlens keys list`)")
        print(f"revoked {key_id}")
    return 0


def worker_argv(queues: Sequence[str], *, concurrency: int = 1, name: str = "worker") -> list[str]:
    """The ``celery worker`` arguments of one layerlens worker process."""
    return ["worker", f"--queues={','.join(queues)}", f"--concurrency={concurrency}",
            "--pool=prefork", f"--hostname={name}@%h", "--loglevel=INFO",
            "--without-gossip", "--without-mingle"]


def run_worker(queues: Sequence[str], concurrency: int) -> int:
    """A Celery worker in this process (blocks until it stops)."""
    from workers.celery_app import app

    app.worker_main(worker_argv(queues, concurrency=concurrency))
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: one the system picks); a port in
    use or an address not of this machine is :class:`Refused`. Bound here rather than by
    uvicorn, so the address printed at start is the one bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog; connections wait here until it serves
    except OSError as exc:
        sock.close()
        raise Refused(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket, with the port it really got."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def _serve_on(app: Any, sock: socket.socket, **options: Any) -> None:
    """uvicorn serving ``app`` on the already bound ``sock`` until it is stopped."""
    import uvicorn

    config = uvicorn.Config(app, timeout_graceful_shutdown=10, **options)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


def run_api(settings: Settings, host: str, port: int) -> int:
    """The API alone (production: workers run elsewhere). Refuses an unmigrated database."""
    from service.app import create_app

    settings = auth_for(settings, host, default_off=False)
    app = create_app(settings)
    sock = listen(host, port)
    print(f"layerlens: serving {url_of(sock)} (API only; workers run elsewhere)", flush=True)
    _serve_on(app, sock, log_level="info", proxy_headers=True)
    return 0


def _stop_with_parent() -> None:
    """In a worker, before exec: SIGTERM (a warm shutdown) when ``serve`` dies, however it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_workers(env: dict[str, str], log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """The embedded deployment's two worker processes: jobs, and upload inspection."""
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for queue in ("jobs", "inspect"):
        log = (log_dir / f"worker-{queue}.log").open("ab")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app",
             *worker_argv([queue], name=queue)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_stop_with_parent))
    return processes


def stop(processes: Sequence[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_serve(settings: Settings, host: str, port: int) -> int:
    """API + one real Celery worker per queue, on this machine's data folder.

    The embedded database is migrated here, since this process owns it.
    """
    from service.app import create_app

    settings = auth_for(settings, host, default_off=True)
    if settings.database_url.startswith("sqlite"):
        migrate(settings)
    sock = listen(host, port)  # before the workers start: a port in use stops nothing
    env = {**os.environ, "LAYERLENS_DATA_DIR": str(settings.data_dir),
           "LAYERLENS_DATABASE_URL": settings.database_url,
           "LAYERLENS_BROKER_URL": settings.broker_url,
           "LAYERLENS_STORAGE_URL": settings.storage_url}
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with Python's default
    # action the process would die before the `finally` below stops the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    workers = spawn_workers(env, settings.data_dir / "logs")
    try:
        app = create_app(settings)
        print(f"layerlens: serving {url_of(sock)} (data: {settings.data_dir}; worker logs: "
              f"{settings.data_dir / 'logs'})", flush=True)
        _serve_on(app, sock, log_level="warning")
    finally:
        sock.close()
        stop(workers)
    return 0
