"""``/v1/jobs``: create (idempotent), follow, cancel, and read the report and artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from infra import s3_datasets
from infra.db import jobs as state
from infra.db.models import (
    FINAL_STATES,
    JOB_STATES,
    AnalysisResult,
    Artifact,
    Dataset,
    Job,
    Model,
)
from infra.db.session import transaction
from infra.queue import RUN_JOB
from layerlens.data.resolve import BUILTIN_NAMES
from layerlens.spec import default_spec
from service import pagination
from service.auth import Tenant
from service.context import ServiceContext, context
from service.problems import Problem, documented
from service.routes.common import checked_cursor, enqueue_or_undo, not_found, utc
from service.schemas import AnalysisState, ArtifactOut, JobCreate, JobOut, Page, storable

router = APIRouter(prefix="/v1/jobs", responses=documented(401, 422, 503))
Ctx = Annotated[ServiceContext, Depends(context)]
#: Seconds a client should wait between two polls of a job.
POLL_AFTER_S = 2
REPORT_PAGE = "report.html"


def job_out(job: Job) -> JobOut:
    """The job as the API shows it. An analysis of a finished job never reads ``running``:
    one a lost worker left running (the job failed ``worker_lost``) reads ``pending``."""
    finished = job.status in FINAL_STATES
    analyses = {kind: AnalysisState(**({**value, "state": "pending"}
                                       if finished and value["state"] == "running" else value))
                for kind, value in job.analyses.items()}
    return JobOut(id=job.id, status=job.status,  # type: ignore[arg-type]
                  progress=job.progress, stage=job.stage, analyses=analyses,
                  error=job.error, reason=job.reason, model_id=job.model_id,
                  series=job.series, dataset=job.dataset_ref, attempts=job.attempts,
                  created_at=utc(job.created_at),  # type: ignore[arg-type]
                  started_at=utc(job.started_at), finished_at=utc(job.finished_at))


def _accepted(job: Job) -> JSONResponse:
    return JSONResponse(job_out(job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/jobs/{job.id}",
                                 "Retry-After": str(POLL_AFTER_S)})


def _check_dataset(ctx: ServiceContext, ref: str, tenant: str) -> None:
    if ref.startswith("builtin:"):
        if ref.removeprefix("builtin:") not in BUILTIN_NAMES:
            raise Problem(422, f"unknown built-in dataset '{ref}' (available: "
                               + ", ".join(f"builtin:{n}" for n in BUILTIN_NAMES) + ")")
        return
    if ref.startswith("dataset:"):
        with ctx.sessions() as session:
            dataset = session.get(Dataset, ref.removeprefix("dataset:"))
        if dataset is None or dataset.tenant != tenant or dataset.status != "ready":
            raise Problem(422, f"no uploaded dataset '{ref}' (POST /v1/datasets first)")
        return
    if ref.startswith("file://"):
        path = Path(ref.removeprefix("file://")).resolve()
        roots = ctx.settings.dataset_roots
        if not any(path.is_relative_to(root) for root in roots):
            raise Problem(422, f"{ref} is outside the allowed dataset roots "
                               f"({', '.join(map(str, roots)) or 'none configured: set '}"
                               f"{'' if roots else 'LAYERLENS_DATASET_ROOTS'})")
        try:
            is_file = path.is_file()
        except OSError:  # a name too long, say
            is_file = False
        if path.suffix.lower() not in (".npz", ".csv") or not is_file:
            raise Problem(422, f"{ref} is not an existing .npz or .csv file")
        return
    if s3_datasets.is_s3_ref(ref):
        _check_s3_dataset(ctx, ref)
        return
    raise Problem(422, f"unknown dataset reference '{ref}' (use builtin:<name>, "
                       "dataset:<id> from POST /v1/datasets, file://<path> under a root, "
                       "or s3://bucket/key in an allowed bucket)")


def _check_s3_dataset(ctx: ServiceContext, ref: str) -> None:
    """An allowed ``.npz``/``.csv`` key whose object exists: a HEAD, the object is not read."""
    try:
        found = s3_datasets.parse_ref(ref)
        s3_datasets.check_allowed(found, ctx.settings.dataset_buckets, ctx.settings.storage_url)
        s3_datasets.head(s3_datasets.client(ctx.settings.s3_endpoint_url,
                                            timeout_s=s3_datasets.HEAD_TIMEOUT_S), found)
    except s3_datasets.S3Unavailable as exc:
        raise Problem(503, str(exc), headers={"Retry-After": "10"}) from exc
    except s3_datasets.S3DatasetError as exc:
        raise Problem(422, str(exc)) from exc


def _validated(ctx: ServiceContext, body: JobCreate, tenant: str) -> dict[str, Any]:
    """The request with its analyses spec validated and defaults filled in."""
    spec = default_spec() if body.analyses is None else list(body.analyses)
    if not spec:
        raise Problem(422, "analyses is empty: name at least one analysis, or omit the key "
                           "for every kind")
    checkpoints = None if body.series is None else _series(ctx, body.series, body, tenant)
    named = {"": body.model_id, "compare_to: ": body.compare_to}  # the models, by field
    with ctx.sessions() as session:
        models = {where: session.get(Model, model_id)
                  for where, model_id in named.items() if model_id is not None}
    for where, model in models.items():
        if model is None or model.tenant != tenant:
            raise Problem(422, f"{where}no model '{named[where]}' (POST /v1/models first)")
        if model.status != "ready":
            raise Problem(409, f"{where}model '{named[where]}' is {model.status}")
    _check_dataset(ctx, body.dataset, tenant)
    request = body.model_dump(mode="json")
    request["analyses"] = [entry.model_dump(mode="json") for entry in spec]
    if checkpoints is not None:
        request["checkpoints"] = checkpoints
        request["model_id"] = checkpoints[-1]["model_id"]
    return request


def _series(ctx: ServiceContext, name: str, body: JobCreate,
            tenant: str) -> list[dict[str, Any]]:
    """The inspected checkpoints of the tenant's series ``name``, in step order:
    ``[{"model_id", "step"}]``. 404 for an unknown series, 422 for one of a single
    checkpoint or with ``compare_to``; 409 while a checkpoint is being inspected."""
    if body.compare_to is not None:
        raise Problem(422, "compare_to compares two models; a series job compares the "
                           "checkpoints of its series: leave compare_to out")
    with ctx.sessions() as session:
        rows = list(session.scalars(select(Model).where(
            Model.tenant == tenant, Model.series == name).order_by(Model.step)))
    if not rows:
        raise Problem(404, f"no series '{name}' (POST /v1/models with the form fields series "
                           "and step first)")
    waiting = [row for row in rows if row.status != "ready"]
    if waiting:
        raise Problem(409, f"series '{name}': checkpoint '{waiting[0].id}' (step "
                           f"{waiting[0].step}) is {waiting[0].status}")
    if len(rows) < 2:
        raise Problem(422, f"series '{name}' has one checkpoint (step {rows[0].step}); a "
                           "series job needs at least 2 (POST /v1/models with series and "
                           "step)")
    return [{"model_id": row.id, "step": row.step} for row in rows]


_LOCATED = {"Location": {"description": "the job: /v1/jobs/{id}", "schema": {"type": "string"}},
            "Retry-After": {"description": "seconds to wait before polling it",
                            "schema": {"type": "integer"}}}
_FINISHED_ERRORS = documented(404, (409, "The job has no report yet (`status_of_job` says "
                                         "what it is)"))


@router.post("", status_code=202, response_model=JobOut,
             summary="Queue an analysis job; poll the Location it returns",
             responses={202: {"description": "Queued (or the job an Idempotency-Key already "
                                             "made)", "headers": _LOCATED},
                        **documented(400, (404, "No such series"),
                                   (409, "The model (or a checkpoint of the series) is not "
                                         "inspected yet"))})
def create_job(body: JobCreate, ctx: Ctx, tenant: Tenant,
               idempotency_key: Annotated[str | None, Header(max_length=255)] = None
               ) -> JSONResponse:
    digest = hashlib.sha256(json.dumps(body.model_dump(mode="json"),
                                       sort_keys=True).encode()).hexdigest()
    scoped_key = f"{tenant}:{idempotency_key}" if idempotency_key else None
    if scoped_key:
        replay = _replay(ctx, scoped_key, digest)
        if replay is not None:
            return _accepted(replay)
    request = _validated(ctx, body, tenant)
    job = Job(tenant=tenant, model_id=request["model_id"], series=body.series,
              dataset_ref=body.dataset, request=request,
              request_sha256=digest, idempotency_key=scoped_key,
              analyses={e["kind"]: {"state": "pending"} for e in request["analyses"]})
    try:
        with transaction(ctx.sessions) as session:
            session.add(job)
    except IntegrityError:  # the same key raced in from another request
        replay = _replay(ctx, scoped_key or "", digest)
        if replay is None:
            raise
        return _accepted(replay)
    enqueue_or_undo(ctx.sessions, ctx.queue, RUN_JOB, Job, job.id)
    return _accepted(job)


def _replay(ctx: ServiceContext, key: str, digest: str) -> Job | None:
    with ctx.sessions() as session:
        job = session.scalars(select(Job).where(Job.idempotency_key == key)).first()
    if job is not None and job.request_sha256 != digest:
        raise Problem(422, "this Idempotency-Key was used with a different request body; "
                           "use a new key for a new job")
    return job


@router.get("", response_model=Page[JobOut], responses=documented(400))
def list_jobs(ctx: Ctx, tenant: Tenant, cursor: str | None = None,
              status: Annotated[str | None, Query(description="one of " + ", ".join(JOB_STATES))
                                ] = None,
              limit: Annotated[int, Query(ge=1, le=pagination.MAX_LIMIT)] = 50) -> Page[JobOut]:
    query = select(Job).where(Job.tenant == tenant)
    if status is not None:
        if status not in JOB_STATES:
            raise Problem(422, f"status must be one of {', '.join(JOB_STATES)}")
        query = query.where(Job.status == status)
    with ctx.sessions() as session:
        rows = list(session.scalars(pagination.paginate(query, Job, checked_cursor(cursor),
                                                        limit)))
    return Page[JobOut](items=[job_out(j) for j in rows[:limit]],
                        next_cursor=pagination.next_cursor(rows, limit))


def _job(ctx: ServiceContext, job_id: str, tenant: str) -> Job:
    with ctx.sessions() as session:
        job = session.get(Job, job_id) if storable(job_id) else None
    if job is None or job.tenant != tenant:
        raise not_found("job", job_id)
    return job


#: The columns a status poll reads: not the request spec nor the report header.
_STATUS_COLUMNS = [Job.id, Job.status, Job.progress, Job.stage, Job.analyses, Job.error,
                   Job.reason, Job.model_id, Job.series, Job.dataset_ref, Job.attempts,
                   Job.created_at, Job.started_at, Job.finished_at]


def _status_document(ctx: ServiceContext, job_id: str,
                     tenant: str) -> tuple[bytes, str] | None:
    """The job's JSON and status, read column by column (every polling client's hot path)."""
    if not storable(job_id):
        return None
    with ctx.engine.connect() as connection:
        row = connection.execute(select(*_STATUS_COLUMNS).where(
            Job.id == job_id, Job.tenant == tenant)).first()
    if row is None:
        return None
    job = Job(**row._asdict())
    return job_out(job).model_dump_json().encode(), job.status


@router.get("/{job_id}", response_model=JobOut,
            responses={200: {"headers": {"Retry-After": {
                           "description": "while the job is unfinished: seconds to wait before "
                                          "polling again", "schema": {"type": "integer"}}}},
                       **documented(404)},
            summary="A job's status, progress and per-analysis state; poll after Retry-After")
async def get_job(job_id: str, ctx: Ctx, tenant: Tenant) -> Response:
    key = f"{tenant}/{job_id}"
    cached = ctx.job_status.get(key)
    if cached is None:
        found = await ctx.job_status.read_once(
            key, lambda: run_in_threadpool(_status_document, ctx, job_id, tenant))
        if found is None:
            raise not_found("job", job_id)
        cached = found[0], found[1] in FINAL_STATES
        ctx.job_status.put(key, cached[0], final=cached[1])
    body, final = cached
    return Response(body, media_type="application/json",
                    headers={} if final else {"Retry-After": str(POLL_AFTER_S)})


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut,
             summary="Cancel a queued or running job (a running one stops within seconds)",
             responses={202: {"headers": _LOCATED},
                        **documented(404, (409, "The job already succeeded or failed"))})
def cancel_job(job_id: str, ctx: Ctx, tenant: Tenant) -> JSONResponse:
    job = _job(ctx, job_id, tenant)
    if job.status in FINAL_STATES and job.status != "canceled":
        raise Problem(409, f"job '{job_id}' already {job.status}; only queued or running "
                           "jobs can be canceled")
    state.request_cancel(ctx.sessions, job_id)
    ctx.job_status.forget(f"{tenant}/{job_id}")
    return _accepted(_job(ctx, job_id, tenant))


def _finished(ctx: ServiceContext, job_id: str, tenant: str) -> Job:
    """A job with a report: succeeded, or failed with the report of what did finish."""
    job = _job(ctx, job_id, tenant)
    if job.report_header is None:
        raise Problem(409, f"job '{job_id}' is {job.status} and has no report; the report "
                           "exists once the job has run (a failed job has one when some "
                           "analyses finished)", status_of_job=job.status)
    return job


@router.get("/{job_id}/report", summary="The report JSON (the CLI's report.json)",
            responses=_FINISHED_ERRORS)
def get_report(job_id: str, ctx: Ctx, tenant: Tenant) -> JSONResponse:
    return JSONResponse(job_report(ctx, job_id, tenant))


def job_report(ctx: ServiceContext, job_id: str, tenant: str) -> dict[str, Any]:
    """The job's report JSON (the CLI's report.json); 404 for a job the tenant does not
    have, 409 for one without a report yet."""
    job = _finished(ctx, job_id, tenant)
    with ctx.sessions() as session:
        results = {r.kind: r.result for r in session.scalars(
            select(AnalysisResult).where(AnalysisResult.job_id == job_id))}
    order = [entry["kind"] for entry in job.request["analyses"]]
    return {**(job.report_header or {}),
            "analyses": {kind: results[kind] for kind in order if kind in results}}


def _artifact(ctx: ServiceContext, job_id: str, name: str, tenant: str) -> Artifact:
    _finished(ctx, job_id, tenant)
    with ctx.sessions() as session:
        artifact = session.scalars(select(Artifact).where(
            Artifact.job_id == job_id, Artifact.name == name)).first() if storable(name) else None
    if artifact is None:
        raise Problem(404, f"job '{job_id}' has no artifact '{name}'")
    return artifact


@router.get("/{job_id}/report.html", response_class=HTMLResponse, responses=_FINISHED_ERRORS,
            summary="The report page; its images load from the job's artifacts")
def get_report_page(job_id: str, ctx: Ctx, tenant: Tenant) -> HTMLResponse:
    artifact = _artifact(ctx, job_id, REPORT_PAGE, tenant)
    page = b"".join(ctx.storage.read_chunks(artifact.sha256)).decode("utf-8")
    base = f'<base href="/v1/jobs/{job_id}/artifacts/">'
    return HTMLResponse(page.replace("<head>", f"<head>\n{base}", 1))


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut], responses=_FINISHED_ERRORS)
def list_artifacts(job_id: str, ctx: Ctx, tenant: Tenant) -> list[ArtifactOut]:
    _finished(ctx, job_id, tenant)
    with ctx.sessions() as session:
        rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id)
                               .order_by(Artifact.name))
        return [ArtifactOut(name=a.name, content_type=a.content_type, size_bytes=a.size_bytes,
                            sha256=a.sha256, url=f"/v1/jobs/{job_id}/artifacts/{a.name}")
                for a in rows]


_FILE = {"schema": {"type": "string", "format": "binary"}}


@router.get("/{job_id}/artifacts/{name}", summary="One artifact (PNG image, .npy array, ...)",
            response_class=Response, responses={
                200: {"description": "The file, as its ArtifactOut.content_type says",
                      "content": {"image/png": _FILE, "application/octet-stream": _FILE,
                                  "text/html": _FILE, "application/json": _FILE,
                                  "text/csv": _FILE}},
                304: {"description": "Not modified: If-None-Match names this artifact's ETag"},
                **documented((404, "No such job, or the job has no such artifact"),
                             (409, "The job has not succeeded"))})
def get_artifact(job_id: str, name: str, request: Request, ctx: Ctx,
                 tenant: Tenant) -> Response:
    artifact = _artifact(ctx, job_id, name, tenant)
    etag = f'"{artifact.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    headers["Content-Length"] = str(artifact.size_bytes)
    return StreamingResponse(ctx.storage.read_chunks(artifact.sha256),
                             media_type=artifact.content_type, headers=headers)
