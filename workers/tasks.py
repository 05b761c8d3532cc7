"""Celery tasks: inspect an upload, run a job. Each opens the upload only in a child process."""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from infra import s3_datasets
from infra.config import Settings
from infra.db import jobs
from infra.db.models import Dataset, Job, Model
from infra.db.session import make_engine, session_factory, transaction
from infra.queue import INSPECT_TIME_LIMIT_S
from infra.storage import Storage, hash_file, open_storage
from layerlens.options import option_fields
from workers.confine import Limits
from workers.sandbox import ChildOutcome, run_child

log = logging.getLogger("layerlens.worker")

#: Seconds between two progress writes (and cancel checks) of a running job.
HEARTBEAT_S = 0.5
#: How long a job's final write waits for an unavailable database (s), retrying with backoff.
FINAL_WRITE_PATIENCE_S = 120.0
MODEL_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
CONTENT_TYPES = {".png": "image/png", ".npy": "application/octet-stream",
                 ".html": "text/html; charset=utf-8", ".json": "application/json",
                 ".csv": "text/csv; charset=utf-8"}


class WorkerContext:
    """Database, storage and scratch space of one worker process, opened lazily."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def sessions(self):
        return session_factory(make_engine(self.settings.database_url))

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings.storage_url,
                            endpoint_url=self.settings.s3_endpoint_url)

    def limits(self, time_limit_s: float) -> Limits:
        """The child's resource limits: the job's memory, and CPU for every core it may use.

        No address-space limit on a GPU worker: the CUDA driver reserves far more
        address space than it uses.
        """
        gpu = any(Path("/dev").glob("nvidia[0-9]*"))
        return Limits(memory_bytes=None if gpu else self.settings.job_memory_bytes,
                      cpu_seconds=int(time_limit_s * (os.cpu_count() or 1)) + 60)

    def scratch(self, name: str) -> Path:
        root = Path(tempfile.gettempdir()) / "layerlens-scratch"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))


def inspect_model(ctx: WorkerContext, model_id: str) -> None:
    """Open the uploaded model in a child process; record its format and layers, or why not.
    Its messages name the file as it was uploaded (``row.name``), not the scratch file. An
    ONNX export folder (a zip, a tar, or the tar the API made of several file parts) may
    expand to no more than an upload may take."""
    def args(row: Any, path: Path) -> list[str]:
        shape = ["--input-shape", ",".join(map(str, row.input_shape))] if row.input_shape else []
        return ["inspect-model", str(path), *shape, f"--name={row.name}",
                f"--max-bytes={ctx.settings.max_upload_bytes}"]

    _inspect(ctx, Model, model_id, "model.bin", args, ("format", "input_shape", "layers"))


def inspect_dataset(ctx: WorkerContext, dataset_id: str) -> None:
    """Read the uploaded dataset in a child process; record its shape, or why not. Its
    messages name the file as it was uploaded (``row.name``)."""
    def args(row: Any, path: Path) -> list[str]:
        return ["inspect-dataset", str(path), f"--ref={row.name}"]

    with ctx.sessions() as session:
        dataset = session.get(Dataset, dataset_id)
        suffix = dataset.file_format if dataset is not None else "bin"
    _inspect(ctx, Dataset, dataset_id, f"data.{suffix}", args,
             ("n_samples", "x_shape", "n_classes"))


def _inspect(ctx: WorkerContext, table: Any, item_id: str, filename: str,
             args: Callable[[Any, Path], list[str]], keys: tuple[str, ...]) -> None:
    """Fetch an ``inspecting`` upload, run the child on it, store its verdict (compare-and-set)."""
    with ctx.sessions() as session:
        row = session.get(table, item_id)
        if row is None or row.status != "inspecting":
            return  # a duplicate delivery, or already inspected
    scratch = ctx.scratch(f"{table.__tablename__}-{item_id}")
    try:
        path = scratch / filename
        ctx.storage.fetch(row.sha256, path)
        outcome = run_child(args(row, path), scratch, time_limit_s=INSPECT_TIME_LIMIT_S,
                            limits=ctx.limits(INSPECT_TIME_LIMIT_S))
        values = _inspection_values(outcome, keys)
        with transaction(ctx.sessions) as session:
            session.execute(update(table).where(table.id == item_id,
                                                table.status == "inspecting").values(**values))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _inspection_values(outcome: ChildOutcome, keys: tuple[str, ...]) -> dict[str, Any]:
    if outcome.result is not None and outcome.returncode == 0:
        return {"status": "ready", **{key: outcome.result[key] for key in keys}}
    if outcome.error is not None:
        return {"status": "invalid", "error": outcome.error}
    if outcome.killed_because == "timeout":
        return {"status": "invalid", "error": "inspection took longer than "
                f"{INSPECT_TIME_LIMIT_S} s and was stopped"}
    return {"status": "invalid", "error": outcome.crash_summary}


class LeaseHeld(Exception):
    """The job is running under another claim; try again in ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the job's lease lapses in {seconds:.1f} s")
        self.seconds = seconds


class JobRun:
    """One attempt at one job: claim, prepare the scratch folder, run, store, finish."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx, self.job_id = ctx, job_id
        self.token: str | None = None
        self.stage_started: dict[str, float] = {}
        self.durations: dict[str, float] = {}
        self.stage: str | None = None
        self.progress = 0.0
        self.kinds: list[str] = []
        self.next_beat = 0.0
        self.keep_going = True
        self.stored = False  # the child finished and its report is being stored
        self.failed: set[str] = set()  # analyses whose section says failed

    def run(self) -> None:
        lease = self.ctx.settings.job_lease_s
        self.token = jobs.claim(self.ctx.sessions, self.job_id, socket.gethostname(), lease)
        if self.token is None:
            wait = jobs.lease_left(self.ctx.sessions, self.job_id, lease)
            if wait is not None:  # running elsewhere, or its worker was just lost
                raise LeaseHeld(wait)
            log.info("job %s: not claimable (canceled, done or unknown)", self.job_id)
            return
        scratch = self.ctx.scratch(f"job-{self.job_id}")
        try:
            self._run_in(scratch)
        except SoftTimeLimitExceeded:
            self._fail("timeout", "the job ran past its time limit and was stopped")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run_in(self, scratch: Path) -> None:
        try:
            job_file = self._prepare(scratch)
        except s3_datasets.S3Unavailable as exc:
            self._fail("dataset_unavailable", str(exc))
            return
        except s3_datasets.S3DatasetError as exc:  # gone since the API checked it
            self._fail("invalid_input", str(exc))
            return
        time_limit_s = self.ctx.settings.job_time_limit_s - 60
        outcome = run_child(["analyze", str(job_file)], scratch,
                            limits=self.ctx.limits(time_limit_s),
                            time_limit_s=time_limit_s,
                            on_event=self._on_progress, should_stop=self._should_stop)
        if outcome.killed_because == "canceled":
            self._finish("canceled")
        elif outcome.killed_because == "timeout":
            self._fail("timeout", "the job ran past its time limit and was stopped")
        elif outcome.error is not None:
            self._fail(outcome.failure_reason, outcome.error)
        elif outcome.returncode != 0 or outcome.result is None:
            self._fail(outcome.failure_reason, outcome.crash_summary)
        else:
            self._store(Path(outcome.result["out"]))

    def _prepare(self, scratch: Path) -> Path:
        """Fetch the model (and the dataset, unless built in) into ``scratch``; write the job
        file. The child reads only its folder and has no network, so an ``s3://`` dataset is
        downloaded here (raises :class:`~infra.s3_datasets.S3DatasetError` or
        :class:`~infra.s3_datasets.S3Unavailable`)."""
        with self.ctx.sessions() as session:
            job = session.get(Job, self.job_id)
            assert job is not None
            model = session.get(Model, job.model_id)
            assert model is not None
            request, ref = job.request, job.dataset_ref
            other = (session.get(Model, request["compare_to"]) if request.get("compare_to")
                     else None)
            checkpoints = [(session.get(Model, entry["model_id"]), int(entry["step"]))
                           for entry in request.get("checkpoints") or []]
            dataset = (session.get(Dataset, ref.removeprefix("dataset:"))
                       if ref.startswith("dataset:") else None)
        self.kinds = [entry["kind"] for entry in request["analyses"]]
        model_path = scratch / f"model{MODEL_SUFFIX.get(model.format or '', '.bin')}"
        self.ctx.storage.fetch(model.sha256, model_path)
        source: dict[str, Any] = {"ref": ref, "file": None}
        if dataset is not None:
            source["file"] = str(scratch / f"dataset.{dataset.file_format}")
            self.ctx.storage.fetch(dataset.sha256, Path(source["file"]))
        elif ref.startswith("file://"):  # under the roots (the API checked); the child can
            original = Path(ref.removeprefix("file://"))  # read only its own folder
            source["file"] = str(scratch / f"dataset{original.suffix.lower()}")
            shutil.copyfile(original, source["file"])
        elif s3_datasets.is_s3_ref(ref):  # the API checked it; checked again, as this
            found = s3_datasets.parse_ref(ref)  # worker's settings say
            settings = self.ctx.settings
            s3_datasets.check_allowed(found, settings.dataset_buckets, settings.storage_url)
            source["file"] = str(scratch / f"dataset{found.suffix}")
            s3_datasets.download(s3_datasets.client(settings.s3_endpoint_url), found,
                                 Path(source["file"]))
        options = {key: request[key] for key in option_fields() if key in request}
        options["input_shape"] = options.get("input_shape") or model.input_shape
        if other is not None:  # the model compare_to names, as the file it was uploaded as
            name = re.sub(r"[^\w.+-]+", "_", other.name).strip(".")[-120:]
            compared = scratch / "compare" / (name or "model")
            compared.parent.mkdir()
            self.ctx.storage.fetch(other.sha256, compared)
            options["compare_to"] = str(compared)
        job = {"model": str(model_path), "model_name": model.name, "dataset": source,
               "out": str(scratch / "out"), "options": options}
        if checkpoints:
            job["series"] = self._fetch_series(scratch, checkpoints)
        job_file = scratch / "job.json"
        job_file.write_text(json.dumps(job))
        return job_file

    def _fetch_series(self, scratch: Path, checkpoints: list[tuple[Any, int]]
                      ) -> list[dict[str, Any]]:
        """Each checkpoint of a series job into ``scratch/series/<step>/``, as the job file's
        ``series`` entries (named as uploaded)."""
        entries = []
        for row, step in checkpoints:
            folder = scratch / "series" / str(step)
            folder.mkdir(parents=True)
            path = folder / f"model{MODEL_SUFFIX.get(row.format or '', '.bin')}"
            self.ctx.storage.fetch(row.sha256, path)
            entries.append({"path": str(path), "name": row.name, "step": step})
        return entries

    def _on_progress(self, event: dict[str, Any]) -> None:
        stage, step, total = str(event["stage"]), int(event["step"]), max(1, int(event["total"]))
        now = time.monotonic()
        if stage != self.stage:
            if self.stage is not None:
                self.durations[self.stage] = now - self.stage_started[self.stage]
            self.stage_started[stage] = now
            self.stage = stage
            self.next_beat = 0.0  # write stage changes at once
        stages = ["capture", *self.kinds]
        index = stages.index(stage) if stage in stages else 0
        done = (index + min(step, total) / total) / len(stages)
        if "checkpoints" in event:  # a series: this checkpoint's share of the whole
            done = (int(event["checkpoint"]) + done) / max(1, int(event["checkpoints"]))
        self.progress = min(0.99, done)

    def _should_stop(self) -> bool:
        """Write progress at most every :data:`HEARTBEAT_S`; True once a cancel arrived."""
        now = time.monotonic()
        if now < self.next_beat:
            return not self.keep_going
        self.next_beat = now + HEARTBEAT_S
        try:
            self.keep_going = jobs.heartbeat(self.ctx.sessions, self.job_id, self.token or "",
                                             progress=self.progress, stage=self.stage,
                                             analyses=self._analyses(final=False))
        except OperationalError as exc:
            # the database blinked: the job goes on; its lease lapses only if the outage
            # outlasts it
            log.warning("job %s: heartbeat not written: %s", self.job_id,
                        str(exc).splitlines()[0][:200])
        return not self.keep_going

    def _analyses(self, *, final: bool) -> dict[str, Any]:
        """Each analysis's state. ``final``: the job is ending; none is left ``running``
        (the one that was running when a job fails or is canceled goes back to pending)."""
        states: dict[str, Any] = {}
        for kind in self.kinds:
            done = kind in self.durations or (final and kind == self.stage and self.stored)
            if done:
                states[kind] = {"state": "failed" if kind in self.failed else "succeeded",
                                "duration_s": round(self.durations.get(kind, 0.0), 3)}
            elif kind == self.stage and not final:
                states[kind] = {"state": "running"}
            else:
                states[kind] = {"state": "pending"}
        return states

    def _store(self, out: Path) -> None:
        """Store every file of the report folder, then the report rows, in one transaction."""
        if self.stage is not None and self.stage in self.stage_started:
            self.durations[self.stage] = time.monotonic() - self.stage_started[self.stage]
        self.stored = True
        report = json.loads((out / "report.json").read_text())
        artifacts = []
        for path in sorted(p for p in out.iterdir() if p.is_file() and p.name != "report.json"):
            blob = self.ctx.storage.put_file(path, hash_file(path), move=True)
            content_type = CONTENT_TYPES.get(path.suffix.lower()) or (
                mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            artifacts.append((path.name, blob.sha256, content_type, blob.size_bytes))
        sections = report.pop("analyses")
        self.failed = {kind for kind, section in sections.items() if "failed" in section}
        failure = None
        if self.failed:  # the report holds what did finish; the job fails on the first error
            kind = next(kind for kind in sections if kind in self.failed)
            reason = ("invalid_input" if sections[kind]["error_type"] == "invalid_input"
                      else "analysis_failed")
            failure = (reason, f"{kind} failed: {sections[kind]['failed']}")
        stored = _patiently(lambda: jobs.store_report(
            self.ctx.sessions, self.job_id, self.token or "", header=report, sections=sections,
            durations=self.durations, analyses=self._analyses(final=True), artifacts=artifacts,
            failure=failure))
        if not stored:
            log.warning("job %s: lost its claim before storing; result dropped", self.job_id)

    def _fail(self, reason: str, message: str) -> None:
        self._finish("failed", reason=reason, error=message)

    def _finish(self, status: str, **values: Any) -> None:
        def write() -> None:
            with transaction(self.ctx.sessions) as session:
                jobs.finish(session, self.job_id, self.token or "", status,
                            analyses=self._analyses(final=True), **values)
        _patiently(write)


def _patiently(write: Callable[[], Any]) -> Any:
    """``write()``, retried with backoff while the database is unavailable, for up to
    :data:`FINAL_WRITE_PATIENCE_S` (then the error propagates; the sweep re-sends the job)."""
    deadline, pause = time.monotonic() + FINAL_WRITE_PATIENCE_S, 0.5
    while True:
        try:
            return write()
        except OperationalError as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s",
                        str(exc).splitlines()[0][:200], pause)
            time.sleep(pause)
            pause = min(2 * pause, 10.0)
