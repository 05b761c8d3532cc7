"""A real HTTP server for client tests: a tiny ASGI app under uvicorn in a thread.

Each route is a handler that sees the recorded request and returns an
:class:`Answer`; every request is recorded (method, path, headers, body, arrival
time) so tests can count attempts and compare what each carried.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Answer:
    status: int
    body: Any = None  # dict/list: JSON; bytes: as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Recorded], Answer]


def problem(status: int, detail: str, **headers: str) -> Answer:
    return Answer(status, {"type": "about:blank", "title": "error", "status": status,
                           "detail": detail},
                  {"content-type": "application/problem+json", **headers})


def job_body(job_id: str, status: str = "queued", progress: float = 0.0) -> dict[str, Any]:
    return {"id": job_id, "status": status, "progress": progress, "stage": None,
            "analyses": {"linear_probe": {"state": "pending", "duration_s": None}},
            "error": None, "reason": None, "model_id": "m1", "dataset": "builtin:digits",
            "attempts": 0, "created_at": "2025-01-01T00:00:00Z", "started_at": None,
            "finished_at": None}


class ScriptedApp:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Recorded] = []

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes[(method, path)] = handler
            return handler
        return register

    def to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        recorded = Recorded(scope["method"], scope["path"], scope["query_string"].decode(),
                            {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                            body, time.monotonic())
        self.requests.append(recorded)
        handler = self.routes.get((recorded.method, recorded.path))
        answer = handler(recorded) if handler else problem(404, f"no route {recorded.path}")
        if answer.delay:
            await asyncio.sleep(answer.delay)
        payload = answer.body
        headers = dict(answer.headers)
        if not isinstance(payload, bytes):
            payload = b"" if payload is None else json.dumps(payload).encode()
            headers.setdefault("content-type", "application/json")
        headers["content-length"] = str(len(payload))
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": payload})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: ScriptedApp) -> Iterator[str]:
    """Serve ``app`` on a free port; its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", loop="asyncio", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the scripted server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
