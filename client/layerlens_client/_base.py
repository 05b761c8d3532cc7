"""Everything the sync and async clients share, written once and free of I/O.

Each operation is a *flow*: a generator that yields what it needs done —
:class:`Send` (send this request, answer with the response) or :class:`Sleep` —
and returns the operation's result. The flows hold all the logic: request
building, the retry policy, error mapping, response parsing, polling, paging
and download bookkeeping. ``Client`` and ``AsyncClient`` differ only in how they
carry out a ``Send`` and a ``Sleep`` (their ``_run``), which is the whole of
their I/O layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from layerlens_client import _retry
from layerlens_client._onnx_data import external_data_files
from layerlens_client._progress import ProgressLine
from layerlens_client._version import __version__
from layerlens_client.errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    LayerlensError,
    NotFoundError,
    RateLimitError,
    ServerError,
    WaitTimeoutError,
)
from layerlens_client.models import Artifact, DatasetInfo, Job, Model, Page
from layerlens_client.report import Report

log = logging.getLogger("layerlens_client")

ENV_URL = "LAYERLENS_URL"
ENV_API_KEY = "LAYERLENS_API_KEY"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 4
#: The API's largest page (``limit``).
MAX_PAGE_SIZE = 200
REPORT_FILE = "report.json"
_CHUNK = 1 << 20

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
PathLike: TypeAlias = str | os.PathLike[str]
#: An analysis spec entry, or just its kind: "linear_probe" is {"kind": "linear_probe"}.
AnalysisSpec: TypeAlias = str | Mapping[str, Any]
#: The job options ``create_job`` takes, besides ``analyses``, as ``POST /v1/jobs`` names them
#: (the engine's ``layerlens.options.JobOptions``; a test keeps the two the same). None, the
#: default of each, leaves the option out, so the server's default applies.
JOB_OPTIONS = ("layers", "max_samples", "seed", "input_shape", "input_name", "mean", "std",
               "batch_size", "memory_budget", "max_features", "sequence_pooling", "device",
               "compare_to")

_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 413: BadRequestError, 415: BadRequestError, 422: BadRequestError,
    401: AuthenticationError, 403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


class FileSink:
    """Streams one download into a ``.part`` file beside ``dest``, hashing as it goes."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.partial = dest.with_name(f".{dest.name}.part")
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()

    def open(self) -> None:
        """Start (or restart, on a retry) from an empty file."""
        self.close()
        self._file = self.partial.open("wb")
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "FileSink.open first"
        self._file.write(chunk)
        self._hash.update(chunk)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def commit(self, sha256: str) -> Path:
        """Move the finished file into place, if its digest is ``sha256``."""
        self.close()
        digest = self._hash.hexdigest()
        if digest != sha256:
            self.discard()
            raise LayerlensError(f"{self.dest.name}: the downloaded bytes have sha256 {digest}, "
                                 f"the server lists {sha256}")
        os.replace(self.partial, self.dest)
        return self.dest

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class Send:
    """Send ``request``; stream a successful body into ``sink`` if given, else read it."""

    request: httpx.Request
    sink: FileSink | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Action: TypeAlias = Send | Sleep
#: A flow yields actions, is sent each one's outcome, and returns its result.
Flow: TypeAlias = Generator[Action, Any, T]


@dataclass(frozen=True)
class Call:
    """One API request, rebuilt from scratch for every attempt (files are reopened)."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    upload: Path | None = None  # sent as the multipart field "file", streamed from disk
    #: more "file" parts after ``upload``: (name in ``upload``'s folder, local file)
    data_files: tuple[tuple[str, Path], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    sink: FileSink | None = None
    max_retries: int | None = None  # None: the client's


def _q(segment: str) -> str:
    return quote(segment, safe="")


def job_id_of(job: Job | str) -> str:
    return job.id if isinstance(job, Job) else job


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise APIResponseValidationError(
            f"{_where(response)}: the answer is not JSON ({str(exc)[:200]})",
            response=response) from exc


def _validate(schema: type[M], data: Any, response: httpx.Response) -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise APIResponseValidationError(
            f"{_where(response)}: the answer is not a valid {schema.__name__}: {exc}",
            response=response) from exc


def _as(schema: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: _validate(schema, _json(response), response)


def _report(response: httpx.Response) -> dict[str, Any]:
    report = _json(response)
    if not isinstance(report, dict):
        raise APIResponseValidationError(f"{_where(response)}: the report is not a JSON object",
                                         response=response)
    return report


def _artifact_list(response: httpx.Response) -> list[Artifact]:
    items = _json(response)
    if not isinstance(items, list):
        raise APIResponseValidationError(f"{_where(response)}: expected a JSON list",
                                         response=response)
    return [_validate(Artifact, item, response) for item in items]


def _where(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path}"


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error answer, with the problem document's detail in its message."""
    problem: dict[str, Any] = {}
    try:
        body = response.json()
        if isinstance(body, dict):
            problem = body
    except ValueError:
        pass
    detail = problem.get("detail")
    if not isinstance(detail, str) or not detail:
        detail = response.text.strip()[:500] or response.reason_phrase or "no detail"
    status = response.status_code
    kind = _STATUS_ERRORS.get(status, ServerError if status >= 500 else APIStatusError)
    message = f"{detail} ({_where(response)}: HTTP {status})"
    return kind(message, response=response, detail=detail, problem=problem)


def _spec_entry(entry: AnalysisSpec) -> dict[str, Any]:
    return {"kind": entry} if isinstance(entry, str) else dict(entry)


def _shape(value: Sequence[int] | str) -> list[int]:
    """``(1, 8, 8)`` or ``"1,8,8"`` -> ``[1, 8, 8]``."""
    if isinstance(value, str):
        try:
            return [int(part) for part in value.split(",")]
        except ValueError:
            message = f"input_shape must be whole numbers like 1,8,8, got {value!r}"
            raise ValueError(message) from None
    return [int(d) for d in value]


def job_body(model_id: str | None, dataset: str | None,
             analyses: Sequence[AnalysisSpec] | None, options: Mapping[str, Any], *,
             series: str | None = None) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body: the model (or the series), the dataset, and every option
    that is not None."""
    unknown = set(options) - set(JOB_OPTIONS)
    if unknown:
        raise TypeError(f"unknown job options: {', '.join(sorted(unknown))}")
    if (model_id is None) == (series is None):
        raise TypeError("give exactly one of model_id (one model) and series (the "
                        "checkpoints of a training run)")
    if dataset is None:
        raise TypeError("dataset is required (e.g. 'builtin:digits')")
    body: dict[str, Any] = {"model_id": model_id} if series is None else {"series": series}
    body["dataset"] = dataset
    if analyses is not None:
        if isinstance(analyses, str):
            analyses = [analyses]
        body["analyses"] = [_spec_entry(entry) for entry in analyses]
    for name in JOB_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        if name == "layers":
            value = [value] if isinstance(value, str) else list(value)
        elif name == "input_shape":
            value = _shape(value)
        elif name in ("mean", "std"):
            value = [float(v) for v in value]
        body[name] = value
    return body


def _data_files_beside(model: Path) -> tuple[tuple[str, Path], ...]:
    """The external data files of an ONNX ``model`` that lie in its folder (torch's default
    exporter writes ``f.onnx.data``), each under its name there; one that is missing goes
    unsent, and the server names it."""
    found = []
    for location in external_data_files(model):
        local = model.parent / location
        if ".." not in Path(location).parts and not Path(location).is_absolute() \
                and local.is_file():
            found.append((location, local))
    return tuple(found)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _artifact_path(directory: Path, name: str) -> Path:
    """``directory / name``, refusing any name that would land elsewhere."""
    if not name or name in {".", ".."} or any(c in name for c in "/\\\0"):
        raise LayerlensError(f"refusing to write an artifact named {name!r}")
    return directory / name


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


class BaseClient:
    """Configuration and every operation as a flow; see the module docstring.

    The retry delays are class attributes: set them on a subclass or an instance
    to tune them (tests make them tiny).
    """

    #: Backoff before retry n (0-based) is uniform in [0, min(initial * 2**n, max)] seconds.
    retry_initial_delay: float = 0.5
    retry_max_delay: float = 8.0
    #: A longer ``Retry-After`` is waited only this long.
    retry_after_max: float = 60.0

    def __init__(self, base_url: str | None, *, api_key: str | None,
                 timeout: float | httpx.Timeout | None, max_retries: int) -> None:
        url = base_url or os.environ.get(ENV_URL)
        if not url:
            raise LayerlensError(f"no server URL: pass base_url or set {ENV_URL} "
                                 "(e.g. http://127.0.0.1:8000)")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise LayerlensError(f"invalid server URL {url!r}: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise LayerlensError(f"the server URL must be http(s)://host[:port], got {url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        self.base_url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # -- requests and the retry policy ---------------------------------------------------

    def _build_request(self, call: Call, files: ExitStack) -> httpx.Request:
        headers = {"Accept": "application/json",
                   "User-Agent": f"layerlens-client/{__version__} httpx/{httpx.__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(call.headers)
        upload = None
        if call.upload is not None:
            parts = [(call.upload.name, call.upload), *call.data_files]
            upload = [("file", (name, files.enter_context(path.open("rb")),
                                "application/octet-stream")) for name, path in parts]
        return httpx.Request(call.method, self.base_url + call.path, params=call.params,
                             json=call.json, data=call.data, files=upload, headers=headers,
                             extensions={"timeout": self.timeout.as_dict()})

    def _retry_delay(self, retries_taken: int, response: httpx.Response | None) -> float:
        if response is not None:
            asked = _retry.retry_after(response.headers)
            if asked is not None:
                return min(asked, self.retry_after_max)
        return _retry.backoff(retries_taken, initial=self.retry_initial_delay,
                              maximum=self.retry_max_delay)

    def _exchange(self, call: Call) -> Flow[httpx.Response]:
        """Send ``call``, retrying what is worth retrying; the successful response."""
        allowed = self.max_retries if call.max_retries is None else call.max_retries
        retries_taken = 0
        while True:
            response: httpx.Response | None = None
            with ExitStack() as files:
                request = self._build_request(call, files)
                try:
                    response = yield Send(request, call.sink)
                except httpx.RequestError as exc:
                    error: LayerlensError = self._connection_error(exc, request, retries_taken)
                    if retries_taken >= allowed or not _retry.should_retry_error(exc):
                        raise error from exc
                else:
                    assert response is not None
                    if response.status_code < 400:
                        return response
                    error = status_error(response)
                    if retries_taken >= allowed or not _retry.should_retry_status(
                            response.status_code):
                        raise error
            delay = self._retry_delay(retries_taken, response)
            log.info("%s %s: %s; retry %d of %d in %.2f s", call.method, call.path, error,
                     retries_taken + 1, allowed, delay)
            yield Sleep(delay)
            retries_taken += 1

    def _connection_error(self, error: httpx.RequestError, request: httpx.Request,
                          retries_taken: int) -> APIConnectionError:
        after = f" (after {retries_taken + 1} attempts)" if retries_taken else ""
        where = f"{request.method} {request.url}"
        if isinstance(error, httpx.TimeoutException):
            return APITimeoutError(f"{where} timed out{after}: {type(error).__name__}",
                                   request=request)
        reason = str(error) or type(error).__name__
        if not isinstance(error, httpx.TransportError):  # a broken body, a redirect loop
            return APIConnectionError(f"{where}: {type(error).__name__}: {reason}",
                                      request=request)
        return APIConnectionError(f"cannot reach {self.base_url} ({where}){after}: {reason}",
                                  request=request)

    def _request(self, call: Call, parse: Callable[[httpx.Response], T]) -> Flow[T]:
        response = yield from self._exchange(call)
        return parse(response)

    # -- the operations ------------------------------------------------------------------

    def _flow_health(self) -> Flow[bool]:
        try:  # one quick try: a health probe reports, it does not insist
            response = yield from self._exchange(Call("GET", "/healthz", max_retries=0))
        except (APIStatusError, APIConnectionError):
            return False
        return response.status_code == 200

    def _flow_upload_model(self, path: PathLike, *, input_shape: Sequence[int] | str | None,
                           name: str | None, series: str | None = None,
                           step: int | None = None) -> Flow[Model]:
        data: dict[str, str] = {}
        if series is not None:
            data["series"] = series
        if step is not None:
            data["step"] = str(int(step))
        if input_shape is not None:
            data["input_shape"] = (input_shape if isinstance(input_shape, str)
                                   else ",".join(str(int(d)) for d in input_shape))
        if name is not None:
            data["name"] = name
        model = Path(path)
        return self._request(Call("POST", "/v1/models", data=data or None, upload=model,
                                  data_files=_data_files_beside(model)), _as(Model))

    def _flow_upload_dataset(self, path: PathLike, *, name: str | None) -> Flow[DatasetInfo]:
        data = {"name": name} if name is not None else None
        return self._request(Call("POST", "/v1/datasets", data=data, upload=Path(path)),
                             _as(DatasetInfo))

    def _flow_get_model(self, model_id: str) -> Flow[Model]:
        return self._request(Call("GET", f"/v1/models/{_q(model_id)}"), _as(Model))

    def _flow_get_dataset(self, dataset_id: str) -> Flow[DatasetInfo]:
        return self._request(Call("GET", f"/v1/datasets/{_q(dataset_id)}"), _as(DatasetInfo))

    def _flow_create_job(self, model_id: str | None, dataset: str | None,
                         analyses: Sequence[AnalysisSpec] | None, *,
                         idempotency_key: str | None, series: str | None = None,
                         **options: Any) -> Flow[Job]:
        body = job_body(model_id, dataset, analyses, options, series=series)
        # One key for every attempt: a retry of a request whose answer was lost replays
        # the job the first attempt created instead of queueing a second one.
        key = idempotency_key or str(uuid.uuid4())
        return self._request(Call("POST", "/v1/jobs", json=body,
                                  headers={"Idempotency-Key": key}), _as(Job))

    def _flow_get_job(self, job: Job | str) -> Flow[Job]:
        return self._request(Call("GET", f"/v1/jobs/{_q(job_id_of(job))}"), _as(Job))

    def _flow_cancel(self, job: Job | str) -> Flow[Job]:
        return self._request(Call("POST", f"/v1/jobs/{_q(job_id_of(job))}/cancel"), _as(Job))

    def _flow_report_json(self, job: Job | str) -> Flow[dict[str, Any]]:
        return self._request(Call("GET", f"/v1/jobs/{_q(job_id_of(job))}/report"), _report)

    def _flow_report(self, job: Job | str) -> Flow[Report]:
        return self._request(Call("GET", f"/v1/jobs/{_q(job_id_of(job))}/report"),
                             lambda response: _validate(Report, _report(response), response))

    def _flow_artifacts(self, job: Job | str) -> Flow[list[Artifact]]:
        return self._request(Call("GET", f"/v1/jobs/{_q(job_id_of(job))}/artifacts"),
                             _artifact_list)

    def _flow_wait(self, job: Job | str, *, timeout: float | None, poll_interval: float,
                   progress: bool | None) -> Flow[Job]:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be 0 or more (or None: no limit), got {timeout}")
        if isinstance(job, Job) and job.done:
            return job
        job_id = job_id_of(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        line = ProgressLine.create(progress)
        try:
            while True:
                response = yield from self._exchange(Call("GET", f"/v1/jobs/{_q(job_id)}"))
                current = _as(Job)(response)
                line.show(current)
                if current.done:
                    return current
                # The server's Retry-After, but never faster than poll_interval nor slower
                # than four times it.
                asked = _retry.retry_after(response.headers) or 0.0
                delay = min(max(poll_interval, asked), 4 * poll_interval)
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeoutError(
                            f"job {job_id} is still {current.status} "
                            f"({current.progress:.0%}) after {timeout:g} s",
                            job=current, timeout=timeout or 0.0)
                    delay = min(delay, remaining)
                yield Sleep(delay)
        finally:
            line.close()

    def _flow_download(self, job: Job | str, directory: PathLike) -> Flow[list[Path]]:
        job_id = job_id_of(job)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        report = yield from self._flow_report_json(job_id)
        report_path = folder / REPORT_FILE
        _write_atomically(report_path, json.dumps(report, indent=2))
        written = [report_path]
        listed = yield from self._flow_artifacts(job_id)
        for artifact in listed:
            dest = _artifact_path(folder, artifact.name)
            if dest.is_file() and sha256_of(dest) == artifact.sha256:
                written.append(dest)
                continue
            sink = FileSink(dest)
            try:
                yield from self._exchange(Call(
                    "GET", f"/v1/jobs/{_q(job_id)}/artifacts/{_q(artifact.name)}", sink=sink))
                written.append(sink.commit(artifact.sha256))
            finally:
                sink.discard()
        return written

    def _flow_page(self, path: str, item: type[M], *, cursor: str | None, page_size: int,
                   params: Mapping[str, str] | None = None) -> Flow[Page[M]]:
        query: dict[str, str | int] = {"limit": page_size, **(params or {})}
        if cursor:
            query["cursor"] = cursor
        return self._request(Call("GET", path, params=query), _as(Page[item]))  # type: ignore[valid-type]

    @staticmethod
    def _check_page_size(page_size: int) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1 to {MAX_PAGE_SIZE}, got {page_size}")
