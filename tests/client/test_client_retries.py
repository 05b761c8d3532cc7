"""Retries, Retry-After, idempotency and error mapping against a real HTTP server.

The server is a tiny scripted ASGI app under uvicorn (see ``scripted.py``), so every
request really crosses a socket: nothing here is a mock transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from layerlens_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    BadRequestError,
    Client,
    Job,
    LayerlensError,
    NotFoundError,
    RateLimitError,
    ServerError,
    WaitTimeoutError,
)
from layerlens_client._retry import backoff, retry_after
from tests.client.scripted import Answer, Recorded, ScriptedApp, job_body, problem, serving

FAST = {"retry_initial_delay": 0.01, "retry_max_delay": 0.05}
C = TypeVar("C", Client, AsyncClient)


@pytest.fixture
def app() -> ScriptedApp:
    return ScriptedApp()


@pytest.fixture
def url(app: ScriptedApp) -> Iterator[str]:
    with serving(app) as base:
        yield base


def fast(client: C) -> C:
    """Tiny backoff delays, so retries take milliseconds."""
    for name, value in FAST.items():
        setattr(client, name, value)
    return client


def idempotent_jobs(app: ScriptedApp, failures: int) -> dict[str, dict[str, object]]:
    """POST /v1/jobs that creates (or replays) the job of each Idempotency-Key, then answers
    503 to the first ``failures`` requests, as a proxy that lost the answer would."""
    jobs: dict[str, dict[str, object]] = {}

    @app.route("POST", "/v1/jobs")
    def create(request: Recorded) -> Answer:
        key = request.headers.get("idempotency-key") or uuid.uuid4().hex
        jobs.setdefault(key, job_body(f"job-{len(jobs) + 1}"))
        if len(app.to("POST", "/v1/jobs")) <= failures:
            return problem(503, "upstream unavailable", **{"retry-after": "0"})
        return Answer(202, jobs[key], {"location": f"/v1/jobs/{jobs[key]['id']}"})

    return jobs


def test_create_job_retries_with_one_idempotency_key(app: ScriptedApp, url: str) -> None:
    jobs = idempotent_jobs(app, failures=2)
    with fast(Client(url)) as client:
        job = client.create_job("m1", "builtin:digits", [{"kind": "linear_probe"}])
    posts = app.to("POST", "/v1/jobs")
    assert len(posts) == 3
    keys = {p.headers.get("idempotency-key") for p in posts}
    assert len(keys) == 1 and None not in keys
    assert len(jobs) == 1
    assert job.id == "job-1" and job.status == "queued"
    assert posts[0].body == posts[2].body


def test_async_create_job_retries_with_one_idempotency_key(app: ScriptedApp, url: str) -> None:
    jobs = idempotent_jobs(app, failures=2)

    async def main() -> Job:
        async with fast(AsyncClient(url)) as client:
            return await client.create_job("m1", "builtin:digits", ["linear_probe"],
                                           idempotency_key="my-key")

    job = asyncio.run(main())
    posts = app.to("POST", "/v1/jobs")
    assert len(posts) == 3
    assert {p.headers["idempotency-key"] for p in posts} == {"my-key"}
    assert len(jobs) == 1 and job.id == "job-1"
    assert json.loads(posts[0].body)["analyses"] == [{"kind": "linear_probe"}]


def test_each_create_job_call_has_its_own_key(app: ScriptedApp, url: str) -> None:
    jobs = idempotent_jobs(app, failures=0)
    with Client(url) as client:
        first = client.create_job("m1", "builtin:digits")
        second = client.create_job("m1", "builtin:digits")
    assert first.id != second.id and len(jobs) == 2


def test_rate_limit_waits_for_retry_after(app: ScriptedApp, url: str) -> None:
    @app.route("GET", "/v1/jobs/j1")
    def get(request: Recorded) -> Answer:
        if len(app.to("GET", "/v1/jobs/j1")) == 1:
            return problem(429, "slow down", **{"retry-after": "1"})
        return Answer(200, job_body("j1", "running", 0.5))

    with fast(Client(url)) as client:
        job = client.get_job("j1")
    first, second = app.to("GET", "/v1/jobs/j1")
    assert job.progress == 0.5
    assert 0.9 <= second.at - first.at < 5.0


def test_retry_after_is_capped(app: ScriptedApp, url: str) -> None:
    answers = iter([problem(503, "maintenance", **{"retry-after": "3600"}),
                    Answer(200, job_body("j1"))])
    app.route("GET", "/v1/jobs/j1")(lambda request: next(answers))
    client = fast(Client(url))
    client.retry_after_max = 0.2
    started = time.monotonic()
    with client:
        client.get_job("j1")
    assert time.monotonic() - started < 3.0


def test_rate_limit_error_after_every_retry(app: ScriptedApp, url: str) -> None:
    app.route("GET", "/v1/jobs/j1")(lambda r: problem(429, "quota", **{"retry-after": "0"}))
    with fast(Client(url, max_retries=1)) as client, pytest.raises(RateLimitError) as caught:
        client.get_job("j1")
    assert caught.value.status_code == 429 and len(app.requests) == 2


def test_server_error_retried_up_to_max_retries(app: ScriptedApp, url: str) -> None:
    app.route("GET", "/v1/jobs/j1")(lambda r: problem(500, "internal error; see the log"))
    with fast(Client(url, max_retries=2)) as client, pytest.raises(ServerError) as caught:
        client.get_job("j1")
    assert len(app.requests) == 3
    error = caught.value
    assert error.status_code == 500 and error.detail == "internal error; see the log"
    assert error.problem["status"] == 500 and error.response.status_code == 500
    assert "internal error; see the log" in str(error) and "HTTP 500" in str(error)


def test_not_found_is_not_retried(app: ScriptedApp, url: str) -> None:
    with fast(Client(url)) as client, pytest.raises(NotFoundError) as caught:
        client.get_job("nope")
    assert len(app.requests) == 1 and caught.value.status_code == 404


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_bad_request_is_not_retried(app: ScriptedApp, url: str, status: int) -> None:
    app.route("POST", "/v1/jobs")(lambda r: problem(status, "analyses[0]: unknown key 'x'"))
    with fast(Client(url)) as client, pytest.raises(BadRequestError) as caught:
        client.create_job("m1", "builtin:digits", [{"kind": "linear_probe", "x": 1}])
    assert len(app.requests) == 1
    assert caught.value.status_code == status
    assert "analyses[0]: unknown key 'x'" in str(caught.value)


def test_request_timeout_408_is_retried(app: ScriptedApp, url: str) -> None:
    answers = iter([problem(408, "too slow"), Answer(200, job_body("j1"))])
    app.route("GET", "/v1/jobs/j1")(lambda request: next(answers))
    with fast(Client(url)) as client:
        assert client.get_job("j1").id == "j1"
    assert len(app.requests) == 2


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await super().handle_async_request(request)


def _refusing_url() -> str:
    from tests.client.scripted import free_port

    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_connection_refused_after_retries() -> None:
    transport = CountingTransport()
    with fast(Client(_refusing_url(), max_retries=2, transport=transport)) as client, \
            pytest.raises(APIConnectionError) as caught:
        client.get_job("j1")
    assert transport.attempts == 3
    assert not isinstance(caught.value, APITimeoutError)
    assert "after 3 attempts" in str(caught.value)


def test_async_connection_refused_after_retries() -> None:
    transport = AsyncCountingTransport()

    async def main() -> None:
        async with fast(AsyncClient(_refusing_url(), max_retries=2,
                                    transport=transport)) as client:
            await client.get_job("j1")

    with pytest.raises(APIConnectionError):
        asyncio.run(main())
    assert transport.attempts == 3


def test_health_is_false_when_unreachable() -> None:
    transport = CountingTransport()
    with Client(_refusing_url(), transport=transport) as client:
        assert client.health() is False
    assert transport.attempts == 1


def test_timeout_raises_api_timeout_error(app: ScriptedApp, url: str) -> None:
    app.route("GET", "/v1/jobs/j1")(lambda r: Answer(200, job_body("j1"), delay=1.5))
    with fast(Client(url, timeout=0.2, max_retries=1)) as client, \
            pytest.raises(APITimeoutError):
        client.get_job("j1")
    assert len(app.requests) == 2


def test_upload_sends_the_whole_file_on_every_attempt(app: ScriptedApp, url: str,
                                                      tmp_path: Path) -> None:
    blob = uuid.uuid4().bytes * 20_000  # 320 kB
    path = tmp_path / "model.onnx"
    path.write_bytes(blob)
    answers = iter([problem(503, "busy", **{"retry-after": "0"}),
                    Answer(201, {"id": "m1", "sha256": hashlib.sha256(blob).hexdigest(),
                                 "format": "onnx", "name": "model.onnx",
                                 "size_bytes": len(blob), "input_shape": [1, 8, 8],
                                 "layers": [{"name": "fc", "shape": [10], "op": "Gemm"}],
                                 "created_at": "2025-01-01T00:00:00Z", "new_field": 1})])
    app.route("POST", "/v1/models")(lambda request: next(answers))
    with fast(Client(url)) as client:
        model = client.upload_model(path, input_shape=(1, 8, 8))
    first, second = app.to("POST", "/v1/models")
    for attempt in (first, second):
        assert blob in attempt.body
        assert b'name="input_shape"\r\n\r\n1,8,8\r\n' in attempt.body
        assert attempt.headers["content-type"].startswith("multipart/form-data")
    assert model.layers[0].name == "fc" and model.input_shape == [1, 8, 8]
    assert model.model_extra == {"new_field": 1}


def test_wait_polls_within_bounds_and_draws_progress(app: ScriptedApp, url: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    states = iter([("running", 0.25), ("running", 0.75), ("succeeded", 1.0)])

    @app.route("GET", "/v1/jobs/j1")
    def get(request: Recorded) -> Answer:
        status, progress = next(states)
        headers = {} if status == "succeeded" else {"retry-after": "30"}
        return Answer(200, job_body("j1", status, progress), headers)

    with Client(url) as client:
        job = client.wait(Job.model_validate(job_body("j1")), poll_interval=0.05,
                          progress=True)
    assert job.status == "succeeded" and job.done
    polls = app.to("GET", "/v1/jobs/j1")
    gaps = [b.at - a.at for a, b in itertools.pairwise(polls)]
    assert len(polls) == 3
    # Retry-After: 30 is honoured only up to 4 * poll_interval
    assert all(0.04 <= gap < 1.0 for gap in gaps), gaps
    err = capsys.readouterr().err
    assert "\r" in err and "25%" in err and "100%" in err and err.endswith("\n")


def test_wait_is_silent_when_stderr_is_not_a_terminal(app: ScriptedApp, url: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    app.route("GET", "/v1/jobs/j1")(lambda r: Answer(200, job_body("j1", "failed", 0.3)))
    with Client(url) as client:
        job = client.wait("j1", poll_interval=0.05)
    assert job.status == "failed"
    assert capsys.readouterr().err == ""


def test_wait_timeout(app: ScriptedApp, url: str) -> None:
    app.route("GET", "/v1/jobs/j1")(lambda r: Answer(200, job_body("j1", "running", 0.1)))

    async def main() -> None:
        async with AsyncClient(url) as client:
            await client.wait("j1", timeout=0.3, poll_interval=0.05, progress=False)

    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as caught:
        asyncio.run(main())
    assert 0.25 <= time.monotonic() - started < 5
    assert caught.value.job.status == "running" and isinstance(caught.value, TimeoutError)


def test_download_skips_files_whose_sha256_matches(app: ScriptedApp, url: str,
                                                   tmp_path: Path) -> None:
    files = {"a.png": b"\x89PNG" + b"a" * 5000, "b.npy": b"\x93NUMPY" + b"b" * 300}
    app.route("GET", "/v1/jobs/j1/report")(lambda r: Answer(200, {"analyses": {}}))
    app.route("GET", "/v1/jobs/j1/artifacts")(lambda r: Answer(200, [
        {"name": name, "content_type": "application/octet-stream", "size_bytes": len(data),
         "sha256": hashlib.sha256(data).hexdigest(), "url": f"/v1/jobs/j1/artifacts/{name}"}
        for name, data in files.items()]))

    def serve_bytes(data: bytes) -> Callable[[Recorded], Answer]:
        return lambda request: Answer(200, data, {"content-type": "application/octet-stream"})

    for name, data in files.items():
        app.route("GET", f"/v1/jobs/j1/artifacts/{name}")(serve_bytes(data))
    out = tmp_path / "out"
    with Client(url) as client:
        paths = client.download_artifacts("j1", out)
        assert sorted(p.name for p in paths) == ["a.png", "b.npy", "report.json"]
        assert all((out / name).read_bytes() == data for name, data in files.items())
        (out / "b.npy").write_bytes(b"stale")
        client.download_artifacts("j1", out)
    fetched = [r.path.rsplit("/", 1)[1] for r in app.requests if "/artifacts/" in r.path]
    assert fetched == ["a.png", "b.npy", "b.npy"]
    assert (out / "b.npy").read_bytes() == files["b.npy"]
    assert not list(out.glob(".*.part"))


def test_api_key_and_url_from_the_environment(app: ScriptedApp, url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app.route("GET", "/healthz")(lambda r: Answer(200, {"status": "ok"}))
    monkeypatch.setenv("LAYERLENS_URL", url)
    monkeypatch.setenv("LAYERLENS_API_KEY", "sekrit")
    with Client() as client:
        assert client.health() is True
    assert app.requests[0].headers["authorization"] == "Bearer sekrit"
    monkeypatch.delenv("LAYERLENS_URL")
    with pytest.raises(LayerlensError, match="LAYERLENS_URL"):
        Client()


def test_retry_after_parsing() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after(httpx.Headers({"retry-after": later}), now=now.timestamp()) == 7.0
    assert retry_after(httpx.Headers({"retry-after": "2.5"})) == 2.5
    assert retry_after(httpx.Headers({"retry-after": "-3"})) == 0.0
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers()) is None


def test_backoff_is_full_jitter_capped() -> None:
    delays = [backoff(n, initial=0.5, maximum=8.0) for n in range(10) for _ in range(50)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert max(backoff(0, initial=0.5, maximum=8.0) for _ in range(200)) <= 0.5
    assert max(backoff(9, initial=0.5, maximum=8.0) for _ in range(200)) > 4.0


def test_configuration_is_checked_up_front() -> None:
    with pytest.raises(LayerlensError, match="http"):
        Client("ftp://example.org")
    with pytest.raises(ValueError, match="max_retries"):
        Client("http://127.0.0.1:1", max_retries=-1)
    with Client("http://127.0.0.1:1/prefix/") as client:
        assert client.base_url == "http://127.0.0.1:1/prefix"
        with pytest.raises(ValueError, match="page_size"):
            client.list_jobs(page_size=0)
        with pytest.raises(ValueError, match="poll_interval"):
            client.wait("j1", poll_interval=0)
