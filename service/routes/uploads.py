"""``/v1/models`` and ``/v1/datasets``: streamed uploads, inspected by a worker.

The API stores the bytes (content-addressed) and never opens them: a worker
inspects the file in a child process while the request waits, then the
route answers 201 with what the worker found, or 422 with why the file was
refused.

A model may come as several ``file`` parts (an ONNX model and its external data
files): the API stores them as ONE blob, the normalised tar of the parts under
their file names (:mod:`layerlens.models.bundle`), whose sha256 is the one
``layerlens analyze`` reports for the same files; the engine reads the model and
its data from that tar, as from a ``.zip`` or ``.tar`` of the export folder
uploaded as one part (stored as it came).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select

from infra.db.models import Dataset, Model
from infra.queue import INSPECT_DATASET, INSPECT_MODEL
from infra.storage import Spool, StoredBlob
from layerlens.models.bundle import write_tar
from service import pagination
from service.auth import Tenant
from service.context import ServiceContext, context
from service.multipart import FORM_OVERHEAD, Form, read_form
from service.problems import Problem, documented
from service.routes.common import (
    checked_cursor,
    enqueue_or_undo,
    in_transaction,
    not_found,
    utc,
)
from service.schemas import UNSTORABLE, DatasetOut, LayerOut, ModelOut, Page, storable

router = APIRouter(prefix="/v1", responses=documented(401, 422, 503))
Ctx = Annotated[ServiceContext, Depends(context)]
INSPECT_POLL_S = 0.05
MAX_INPUT_RANK = 8
NAME_LENGTH = 255
#: Most ``file`` parts of one model upload: an ONNX model and its external data files.
MAX_MODEL_FILES = 64


def _form(file_description: str, **fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of an upload route (they read the body as a stream)."""
    properties = {"file": {"type": "string", "format": "binary", "description": file_description},
                  "name": {"type": "string", "description": f"default: the file's name; the "
                                                            f"first {NAME_LENGTH} characters "
                                                            "are kept"}, **fields}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": properties}}}}}


_UPLOAD_RESPONSES = {
    201: {"description": "Stored and inspected", "headers": {"Location": {
        "description": "the upload: /v1/models/{id} or /v1/datasets/{id}",
        "schema": {"type": "string"}}}},
    **documented(400, 413, 415, (422, "The form or the file was refused (the detail says why)"),
                 (503, "No worker inspected the file in time (it is stored, and the problem "
                       "names it: GET it later), or the task queue is unavailable"))}


def model_out(model: Model) -> ModelOut:
    return ModelOut(id=model.id, sha256=model.sha256, format=model.format,  # type: ignore[arg-type]
                    name=model.name, size_bytes=model.size_bytes,
                    input_shape=model.input_shape or [],
                    layers=[LayerOut(**layer) for layer in model.layers or []],
                    series=model.series, step=model.step,
                    created_at=utc(model.created_at))  # type: ignore[arg-type]


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut(id=dataset.id, sha256=dataset.sha256, name=dataset.name,
                      format=dataset.file_format,  # type: ignore[arg-type]
                      size_bytes=dataset.size_bytes, n_samples=dataset.n_samples or 0,
                      x_shape=dataset.x_shape or [], n_classes=dataset.n_classes or 0,
                      ref=f"dataset:{dataset.id}",
                      created_at=utc(dataset.created_at))  # type: ignore[arg-type]


def _series_step(fields: dict[str, str], filename: str) -> tuple[str | None, int | None]:
    """The form's ``series`` and ``step``: a step needs a series; a series without a step
    takes the last integer of the file name (``epoch_012.onnx``: 12), as the command line."""
    from layerlens.series.steps import step_from_name

    series = (fields.get("series") or "").strip() or None
    text = (fields.get("step") or "").strip()
    if series is None:
        if text:
            raise Problem(422, "step is the training step of a checkpoint in a series: give "
                               "series too")
        return None, None
    if len(series) > NAME_LENGTH:
        raise Problem(422, f"series must be at most {NAME_LENGTH} characters")
    if not text:
        step = step_from_name(filename)
        if step is None:
            raise Problem(422, f"cannot tell the training step of '{filename}': its name "
                               "holds no integer; give the form field step")
        return series, step
    if not text.isdigit() or len(text) > 18:
        raise Problem(422, f"step must be a non-negative whole number, got '{text}'")
    return series, int(text)


def _input_shape(text: str | None) -> list[int] | None:
    if not text or not text.strip():
        return None
    try:
        shape = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError as exc:
        raise Problem(422, f"input_shape must be comma-separated integers, got '{text}'") from exc
    if not 0 < len(shape) <= MAX_INPUT_RANK or any(d <= 0 for d in shape):
        raise Problem(422, f"input_shape must be 1 to {MAX_INPUT_RANK} positive integers "
                           f"(one sample, no batch axis), got '{text}'")
    return shape


async def _store_upload(ctx: ServiceContext, request: Request, *,
                        max_files: int = 1) -> tuple[StoredBlob, Form]:
    """Stream the form's files into storage; the blob's address and the form. Several file
    parts are stored as the normalised tar of them."""
    spool_dir = ctx.settings.data_dir / "spool"
    form = await read_form(request, spool_dir=spool_dir, limit=ctx.settings.max_upload_bytes,
                           max_files=max_files)
    tar: Spool | None = None
    try:
        blobs = [part.spool.finish() for part in form.files]
        for part, blob in zip(form.files, blobs, strict=True):
            if blob.size_bytes == 0:
                raise Problem(422, "the uploaded file is empty" if len(blobs) == 1 else
                              f"the uploaded file '{part.filename}' is empty")
        filenames = {f"filename '{part.filename}'": part.filename for part in form.files}
        for field, value in {**form.fields, **filenames}.items():
            if not storable(value):
                raise Problem(422, f"the form's {field} {UNSTORABLE}")
        path, blob = form.files[0].spool.path, blobs[0]
        if len(form.files) > 1:
            tar = await run_in_threadpool(_bundle, form, spool_dir)
            path, blob = tar.path, tar.finish()
        await run_in_threadpool(ctx.storage.put_file, path, blob, move=True)
    finally:
        form.discard()
        if tar is not None:
            tar.discard()
    return blob, form


def _bundle(form: Form, spool_dir: Path) -> Spool:
    """The normalised tar of the form's file parts, under their file names."""
    tar = Spool(spool_dir, sum(part.spool.size for part in form.files) + FORM_OVERHEAD)
    try:
        write_tar([(part.filename, part.spool.path) for part in form.files], tar)
    except ValueError as exc:
        tar.discard()
        raise Problem(422, f"file part {exc}; name each part by its path in the model's "
                           "folder") from exc
    except BaseException:
        tar.discard()
        raise
    return tar


async def _await_inspection(ctx: ServiceContext, table: Any, item_id: str) -> Any:
    """Wait for the worker's verdict; 422 (and the row removed) when the file was refused."""
    deadline = time.monotonic() + ctx.settings.inspect_timeout_s
    while time.monotonic() < deadline:
        row = await in_transaction(ctx.sessions, lambda s: s.get(table, item_id))
        if row.status == "ready":
            return row
        if row.status == "invalid":
            await in_transaction(ctx.sessions,
                                 lambda s: s.execute(delete(table).where(table.id == item_id)))
            raise Problem(422, row.error or "the file was refused")
        await asyncio.sleep(INSPECT_POLL_S)
    kind = "model" if table is Model else "dataset"
    raise Problem(503, f"no worker inspected the {kind} within "
                       f"{ctx.settings.inspect_timeout_s:g} s; it is stored and will be "
                       f"inspected when a worker is up: GET /v1/{kind}s/{item_id}",
                  headers={"Retry-After": "10"}, **{f"{kind}_id": item_id})


async def _inspected(ctx: ServiceContext, table: Any, task: str, row: Any) -> Any:
    """The row once a worker has inspected it (rows copied from a known upload already are)."""
    if row.status != "inspecting":
        return row
    await run_in_threadpool(enqueue_or_undo, ctx.sessions, ctx.queue, task, table, row.id)
    return await _await_inspection(ctx, table, row.id)


@router.post("/models", status_code=201, response_model=ModelOut,
             responses={**_UPLOAD_RESPONSES, **documented(
                 (409, "The series has a checkpoint at this step already"))},
             summary="Upload an ONNX or TorchScript model (multipart: file, name, input_shape, "
                     "series, step)",
             openapi_extra=_form(
                 "an ONNX or TorchScript file. An ONNX model with external data: one "
                 f"'file' part per file (the .onnx and its data files, at most "
                 f"{MAX_MODEL_FILES}, named by their paths in the export folder), or one "
                 ".zip or .tar of the export folder", input_shape={
                 "type": "string", "examples": ["1,28,28"],
                 "description": "one sample's shape, comma-separated, no batch axis; needed "
                                "when the file does not say"}, series={
                 "type": "string", "examples": ["run-7"],
                 "description": "the training run this file is a checkpoint of (POST "
                                "/v1/jobs with series analyses every checkpoint)"}, step={
                 "type": "integer", "minimum": 0,
                 "description": "its training step; default the last integer in the "
                                "file's name"}))
async def upload_model(request: Request, ctx: Ctx, tenant: Tenant) -> JSONResponse:
    blob, form = await _store_upload(ctx, request, max_files=MAX_MODEL_FILES)
    shape = _input_shape(form.fields.get("input_shape"))
    filenames = [part.filename for part in form.files]
    filename = next((f for f in filenames if f.lower().endswith(".onnx")), filenames[0])
    name = (form.fields.get("name") or filename or "model")[:NAME_LENGTH]
    series, step = _series_step(form.fields, name)

    def create(session: Any) -> Model:
        if series is not None:  # the same file again (a retried upload) is the same checkpoint
            taken = session.scalars(select(Model).where(
                Model.tenant == tenant, Model.series == series, Model.step == step,
                Model.status != "invalid")).first()
            if taken is not None and taken.sha256 == blob.sha256:
                return taken
            if taken is not None:
                raise Problem(409, f"series '{series}' has another checkpoint at step {step} "
                                   f"already ('{taken.id}')")
        known = session.scalars(select(Model).where(
            Model.tenant == tenant, Model.sha256 == blob.sha256, Model.status == "ready")).first()
        reuse = known is not None and (shape is None or known.input_shape == shape)
        model = Model(tenant=tenant, sha256=blob.sha256, size_bytes=blob.size_bytes, name=name,
                      input_shape=known.input_shape if reuse else shape,
                      status="ready" if reuse else "inspecting",
                      format=known.format if reuse else None,
                      layers=known.layers if reuse else None, series=series, step=step)
        session.add(model)
        session.flush()
        return model

    model = await _inspected(ctx, Model, INSPECT_MODEL, await in_transaction(ctx.sessions, create))
    return JSONResponse(model_out(model).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/v1/models/{model.id}"})


def _ready_rows(ctx: ServiceContext, table: Any, tenant: str, cursor: str | None,
                limit: int) -> list[Any]:
    """One page (plus one row) of the tenant's inspected uploads, newest first."""
    with ctx.sessions() as session:
        return list(session.scalars(pagination.paginate(
            select(table).where(table.tenant == tenant, table.status == "ready"), table,
            checked_cursor(cursor), limit)))


def _ready_row(ctx: ServiceContext, table: Any, kind: str, item_id: str, tenant: str) -> Any:
    """The tenant's upload by id: 404 if unknown (or another tenant's), 409 while inspecting."""
    with ctx.sessions() as session:
        row = session.get(table, item_id) if storable(item_id) else None
    if row is None or row.tenant != tenant:
        raise not_found(kind, item_id)
    if row.status != "ready":
        raise Problem(409, f"{kind} '{item_id}' is {row.status}"
                           + (f": {row.error}" if row.error else ""))
    return row


Limit = Annotated[int, Query(ge=1, le=pagination.MAX_LIMIT)]


_LIST_ERRORS = documented(400)
_ITEM_ERRORS = documented(404, (409, "The upload is still being inspected"))


@router.get("/models", response_model=Page[ModelOut], responses=_LIST_ERRORS)
def list_models(ctx: Ctx, tenant: Tenant, cursor: str | None = None,
                limit: Limit = 50) -> Page[ModelOut]:
    rows = _ready_rows(ctx, Model, tenant, cursor, limit)
    return Page[ModelOut](items=[model_out(m) for m in rows[:limit]],
                          next_cursor=pagination.next_cursor(rows, limit))


@router.get("/models/{model_id}", response_model=ModelOut, responses=_ITEM_ERRORS)
def get_model(model_id: str, ctx: Ctx, tenant: Tenant) -> ModelOut:
    return model_out(_ready_row(ctx, Model, "model", model_id, tenant))


def _dataset_format(filename: str, head: bytes) -> str:
    lowered = filename.lower()
    if lowered.endswith(".npz") or head.startswith(b"PK"):
        return "npz"
    if lowered.endswith(".csv") or not lowered:
        return "csv"
    raise Problem(415, f"'{filename}': upload a .npz (arrays x and y) or a .csv "
                       "(header row, numeric features, a label column)")


@router.post("/datasets", status_code=201, response_model=DatasetOut, responses=_UPLOAD_RESPONSES,
             summary="Upload a dataset: .npz with arrays x and y, or .csv with a label column",
             openapi_extra=_form(".npz with arrays x and y, or .csv with a header row and a "
                                 "label column"))
async def upload_dataset(request: Request, ctx: Ctx, tenant: Tenant) -> JSONResponse:
    blob, form = await _store_upload(ctx, request)
    upload = form.files[0]
    file_format = _dataset_format(upload.filename, upload.spool.head)
    name = (form.fields.get("name") or upload.filename or "dataset")[:NAME_LENGTH]

    def create(session: Any) -> Dataset:
        known = session.scalars(select(Dataset).where(
            Dataset.tenant == tenant, Dataset.sha256 == blob.sha256,
            Dataset.file_format == file_format,
            Dataset.status == "ready")).first()
        dataset = Dataset(tenant=tenant, sha256=blob.sha256, size_bytes=blob.size_bytes, name=name,
                          file_format=file_format)
        if known is not None:
            dataset.status, dataset.n_samples = "ready", known.n_samples
            dataset.x_shape, dataset.n_classes = known.x_shape, known.n_classes
        session.add(dataset)
        session.flush()
        return dataset

    dataset = await _inspected(ctx, Dataset, INSPECT_DATASET,
                               await in_transaction(ctx.sessions, create))
    return JSONResponse(dataset_out(dataset).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/v1/datasets/{dataset.id}"})


@router.get("/datasets", response_model=Page[DatasetOut], responses=_LIST_ERRORS)
def list_datasets(ctx: Ctx, tenant: Tenant, cursor: str | None = None,
                  limit: Limit = 50) -> Page[DatasetOut]:
    rows = _ready_rows(ctx, Dataset, tenant, cursor, limit)
    return Page[DatasetOut](items=[dataset_out(d) for d in rows[:limit]],
                            next_cursor=pagination.next_cursor(rows, limit))


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses=_ITEM_ERRORS)
def get_dataset(dataset_id: str, ctx: Ctx, tenant: Tenant) -> DatasetOut:
    return dataset_out(_ready_row(ctx, Dataset, "dataset", dataset_id, tenant))
