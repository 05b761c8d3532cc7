"""``Client`` and ``AsyncClient``: the I/O layer over the flows of :mod:`._base`.

Each public method hands a flow to ``_run``, which sends its requests and sleeps
its sleeps, blocking (``Client``) or awaiting (``AsyncClient``). Nothing else
differs between the two.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from layerlens_client._base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    AnalysisSpec,
    BaseClient,
    Flow,
    M,
    PathLike,
    Send,
    Sleep,
)
from layerlens_client.models import Artifact, DatasetInfo, Job, Model, Page
from layerlens_client.report import Report

T = TypeVar("T")

__all__ = ["AsyncClient", "Client"]


class Client(BaseClient):
    """Blocking client of the layerlens HTTP API.

    Parameters
    ----------
    base_url : str, optional
        The server, e.g. ``http://127.0.0.1:8000``; default ``$LAYERLENS_URL``.
    api_key : str, optional
        Sent as ``Authorization: Bearer <key>``; default ``$LAYERLENS_API_KEY``.
    timeout : float or httpx.Timeout
        Seconds per request (connect, each read, each write).
    max_retries : int
        Retries after a connection error, a timeout, 408, 429 or 5xx, with exponential
        backoff and full jitter, honouring ``Retry-After`` (up to 60 s).
    transport : httpx.BaseTransport, optional
        For tests and special networking (proxies, unix sockets).
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self._http = httpx.Client(transport=transport, timeout=self.timeout,
                                  follow_redirects=True)

    # -- the I/O layer -------------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    time.sleep(action.seconds)
                    action = flow.send(None)
                    continue
                try:
                    response = self._transmit(action)
                except httpx.RequestError as exc:
                    action = flow.throw(exc)
                else:
                    action = flow.send(response)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    def _transmit(self, send: Send) -> httpx.Response:
        response = self._http.send(send.request, stream=True)
        try:
            if send.sink is not None and response.is_success:
                send.sink.open()
                try:
                    for chunk in response.iter_bytes():
                        send.sink.write(chunk)
                finally:
                    send.sink.close()
            else:
                response.read()
        finally:
            response.close()
        return response

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- the API -------------------------------------------------------------------------

    def health(self) -> bool:
        """True when ``/healthz`` answers 200 (one try, no retries; False if unreachable)."""
        return self._run(self._flow_health())

    def upload_model(self, path: PathLike, *, input_shape: Sequence[int] | None = None,
                     name: str | None = None, series: str | None = None,
                     step: int | None = None) -> Model:
        """Upload an ONNX or TorchScript file (streamed from disk); the inspected model.

        An ONNX file's external data files beside it (``f.onnx.data``, as torch's default
        exporter writes them) go in the same upload. ``input_shape`` is one sample's shape
        without the batch axis, e.g. ``(1, 8, 8)``; TorchScript files need it. ``series``
        names the training run the file is a checkpoint of and ``step`` its step (default
        the last integer in the file's name); ``create_job(series=...)`` analyses them all.
        """
        return self._run(self._flow_upload_model(path, input_shape=input_shape, name=name,
                                                 series=series, step=step))

    def upload_dataset(self, path: PathLike, *, name: str | None = None) -> DatasetInfo:
        """Upload a ``.npz`` (arrays ``x`` and ``y``) or ``.csv``; use ``.ref`` in a job."""
        return self._run(self._flow_upload_dataset(path, name=name))

    def get_model(self, model_id: str) -> Model:
        return self._run(self._flow_get_model(model_id))

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        return self._run(self._flow_get_dataset(dataset_id))

    def create_job(self, model_id: str | None = None, dataset: str | None = None,
                   analyses: Sequence[AnalysisSpec] | None = None, *, series: str | None = None,
                   layers: Sequence[str] | str | None = None, max_samples: int | None = None,
                   seed: int | None = None, input_shape: Sequence[int] | str | None = None,
                   input_name: str | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   batch_size: int | None = None, memory_budget: int | str | None = None,
                   max_features: int | None = None, sequence_pooling: str | None = None,
                   device: str | None = None, compare_to: str | None = None,
                   idempotency_key: str | None = None) -> Job:
        """Queue an analysis job; the queued job.

        ``model_id`` names the model, or ``series`` (instead) a checkpoint series uploaded
        with ``upload_model(series=..., step=...)``: every checkpoint is analysed, and the
        report's ``dynamics`` follow them over training. ``analyses`` is the analysis spec
        (``[{"kind": "linear_probe"}, ...]``; a bare
        kind string stands for ``{"kind": kind}``); None runs every kind. The keywords
        are the API's job options (the same as ``layerlens analyze``'s flags): ``layers``
        (names or glob patterns), ``max_samples``, ``seed``, ``input_shape`` (one sample,
        e.g. ``(1, 8, 8)``), ``input_name`` (the model input the dataset's ``x`` feeds),
        ``mean`` / ``std`` (per channel, to normalise the inputs),
        ``batch_size``, ``memory_budget`` (bytes, or a size like ``"512MB"``),
        ``max_features``, ``sequence_pooling`` (``"mean"``, ``"first"``, ``"last"``: a token
        model's sequence layers over positions), ``device`` (``"auto"``, ``"cpu"``,
        ``"cuda"``) and ``compare_to``
        (the id of another model, whose layers the similarity analysis compares with this
        one's on the same samples); one left None is not sent, so the server's default
        applies. The request carries one
        ``Idempotency-Key`` (a fresh UUID unless given) for all its retries, so a retry
        never creates a second job.
        """
        return self._run(self._flow_create_job(
            model_id, dataset, analyses, series=series, layers=layers,
            max_samples=max_samples, seed=seed,
            input_shape=input_shape, input_name=input_name, mean=mean, std=std,
            batch_size=batch_size, memory_budget=memory_budget, max_features=max_features,
            sequence_pooling=sequence_pooling, device=device, compare_to=compare_to,
            idempotency_key=idempotency_key))

    def get_job(self, job_id: Job | str) -> Job:
        return self._run(self._flow_get_job(job_id))

    def wait(self, job: Job | str, *, timeout: float | None = None, poll_interval: float = 1.0,
             progress: bool | None = None) -> Job:
        """Poll until the job succeeded, failed or was canceled; that final job.

        Polls every ``poll_interval`` seconds, longer when the server's ``Retry-After``
        asks, never longer than ``4 * poll_interval``. ``progress``: a one-line bar on
        stderr; None draws it only when stderr is a terminal. Raises
        :class:`~layerlens_client.errors.WaitTimeoutError` after ``timeout`` seconds.
        A failed job is returned, not raised: look at ``status``, ``reason``, ``error``.
        A job that failed because an analysis did (``reason`` ``analysis_failed`` or
        ``invalid_input``) may still have the report of what finished: :meth:`report`
        returns it (with the failed parts marked), or raises :class:`ConflictError` when
        there is none.
        """
        return self._run(self._flow_wait(job, timeout=timeout, poll_interval=poll_interval,
                                         progress=progress))

    def cancel(self, job_id: Job | str) -> Job:
        """Cancel a queued or running job (:class:`ConflictError` once it has finished)."""
        return self._run(self._flow_cancel(job_id))

    def report(self, job_id: Job | str) -> Report:
        """The report of a finished job, typed (:class:`layerlens_client.report.Report`).

        A succeeded job has one; a failed job has one when some analyses finished (the
        failed ones are :class:`~layerlens_client.report.FailedAnalysis` sections, failed
        layers :class:`~layerlens_client.report.FailedLayer` rows, all listed in
        ``warnings``). :class:`ConflictError` when the job has no report (not finished, or
        failed before any analysis ran); :class:`APIResponseValidationError` when the
        document is not a report.
        """
        return self._run(self._flow_report(job_id))

    def report_json(self, job_id: Job | str) -> dict[str, Any]:
        """The report document as the server sent it (a dict), e.g. to store or forward it."""
        return self._run(self._flow_report_json(job_id))

    def artifacts(self, job_id: Job | str) -> list[Artifact]:
        """The files a succeeded job produced, by name."""
        return self._run(self._flow_artifacts(job_id))

    def download_artifacts(self, job_id: Job | str, directory: PathLike) -> list[Path]:
        """Write ``report.json`` and every artifact into ``directory``; their paths.

        Each file is streamed to disk and checked against its sha256; one already there
        with the right sha256 is not downloaded again.
        """
        return self._run(self._flow_download(job_id, directory))

    def list_jobs(self, *, status: str | None = None, page_size: int = 50) -> Iterator[Job]:
        """Every job, newest first (optionally only those with ``status``), page by page."""
        self._check_page_size(page_size)
        return self._pages("/v1/jobs", Job, page_size, {"status": status} if status else None)

    def list_models(self, *, page_size: int = 50) -> Iterator[Model]:
        self._check_page_size(page_size)
        return self._pages("/v1/models", Model, page_size)

    def list_datasets(self, *, page_size: int = 50) -> Iterator[DatasetInfo]:
        self._check_page_size(page_size)
        return self._pages("/v1/datasets", DatasetInfo, page_size)

    def _pages(self, path: str, item: type[M], page_size: int,
               params: Mapping[str, str] | None = None) -> Iterator[M]:
        cursor: str | None = None
        while True:
            page: Page[M] = self._run(self._flow_page(path, item, cursor=cursor,
                                                      page_size=page_size, params=params))
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor


class AsyncClient(BaseClient):
    """The :class:`Client` for asyncio: the same parameters and methods, awaited.

    ``transport`` is an ``httpx.AsyncBaseTransport``; the ``list_*`` methods return
    async iterators (``async for job in client.list_jobs()``).
    """

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self._http = httpx.AsyncClient(transport=transport, timeout=self.timeout,
                                       follow_redirects=True)

    # -- the I/O layer -------------------------------------------------------------------

    async def _run(self, flow: Flow[T]) -> T:
        try:
            action = next(flow)
            while True:
                if isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                    action = flow.send(None)
                    continue
                try:
                    response = await self._transmit(action)
                except httpx.RequestError as exc:
                    action = flow.throw(exc)
                else:
                    action = flow.send(response)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    async def _transmit(self, send: Send) -> httpx.Response:
        response = await self._http.send(send.request, stream=True)
        try:
            if send.sink is not None and response.is_success:
                send.sink.open()
                try:
                    async for chunk in response.aiter_bytes():
                        send.sink.write(chunk)
                finally:
                    send.sink.close()
            else:
                await response.aread()
        finally:
            await response.aclose()
        return response

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    # -- the API (see Client for the documentation) --------------------------------------

    async def health(self) -> bool:
        return await self._run(self._flow_health())

    async def upload_model(self, path: PathLike, *, input_shape: Sequence[int] | None = None,
                           name: str | None = None, series: str | None = None,
                           step: int | None = None) -> Model:
        return await self._run(self._flow_upload_model(path, input_shape=input_shape,
                                                       name=name, series=series, step=step))

    async def upload_dataset(self, path: PathLike, *, name: str | None = None) -> DatasetInfo:
        return await self._run(self._flow_upload_dataset(path, name=name))

    async def get_model(self, model_id: str) -> Model:
        return await self._run(self._flow_get_model(model_id))

    async def get_dataset(self, dataset_id: str) -> DatasetInfo:
        return await self._run(self._flow_get_dataset(dataset_id))

    async def create_job(self, model_id: str | None = None, dataset: str | None = None,
                         analyses: Sequence[AnalysisSpec] | None = None, *,
                         series: str | None = None,
                         layers: Sequence[str] | str | None = None,
                         max_samples: int | None = None, seed: int | None = None,
                         input_shape: Sequence[int] | str | None = None,
                         input_name: str | None = None,
                         mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None, batch_size: int | None = None,
                         memory_budget: int | str | None = None,
                         max_features: int | None = None, sequence_pooling: str | None = None,
                         device: str | None = None, compare_to: str | None = None,
                         idempotency_key: str | None = None) -> Job:
        return await self._run(self._flow_create_job(
            model_id, dataset, analyses, series=series, layers=layers,
            max_samples=max_samples, seed=seed,
            input_shape=input_shape, input_name=input_name, mean=mean, std=std,
            batch_size=batch_size, memory_budget=memory_budget, max_features=max_features,
            sequence_pooling=sequence_pooling, device=device, compare_to=compare_to,
            idempotency_key=idempotency_key))

    async def get_job(self, job_id: Job | str) -> Job:
        return await self._run(self._flow_get_job(job_id))

    async def wait(self, job: Job | str, *, timeout: float | None = None,
                   poll_interval: float = 1.0, progress: bool | None = None) -> Job:
        return await self._run(self._flow_wait(job, timeout=timeout,
                                               poll_interval=poll_interval, progress=progress))

    async def cancel(self, job_id: Job | str) -> Job:
        return await self._run(self._flow_cancel(job_id))

    async def report(self, job_id: Job | str) -> Report:
        return await self._run(self._flow_report(job_id))

    async def report_json(self, job_id: Job | str) -> dict[str, Any]:
        return await self._run(self._flow_report_json(job_id))

    async def artifacts(self, job_id: Job | str) -> list[Artifact]:
        return await self._run(self._flow_artifacts(job_id))

    async def download_artifacts(self, job_id: Job | str, directory: PathLike) -> list[Path]:
        return await self._run(self._flow_download(job_id, directory))

    def list_jobs(self, *, status: str | None = None,
                  page_size: int = 50) -> AsyncIterator[Job]:
        self._check_page_size(page_size)
        return self._pages("/v1/jobs", Job, page_size, {"status": status} if status else None)

    def list_models(self, *, page_size: int = 50) -> AsyncIterator[Model]:
        self._check_page_size(page_size)
        return self._pages("/v1/models", Model, page_size)

    def list_datasets(self, *, page_size: int = 50) -> AsyncIterator[DatasetInfo]:
        self._check_page_size(page_size)
        return self._pages("/v1/datasets", DatasetInfo, page_size)

    async def _pages(self, path: str, item: type[M], page_size: int,
                     params: Mapping[str, str] | None = None) -> AsyncIterator[M]:
        cursor: str | None = None
        while True:
            page: Page[M] = await self._run(self._flow_page(
                path, item, cursor=cursor, page_size=page_size, params=params))
            for entry in page.items:
                yield entry
            if not page.next_cursor:
                return
            cursor = page.next_cursor
