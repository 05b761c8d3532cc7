"""``GET /v1/jobs/{id}/compare/{other_id}``: two jobs' reports side by side.

The document is :func:`layerlens.comparison.compare_reports`'s (its docstring shows the
shape), the same that ``layerlens compare REPORT_A REPORT_B`` writes; ``a`` is the job in
the path's first place, each side's ``source`` reads ``job <id>``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from layerlens.comparison import compare_reports
from service.auth import Tenant
from service.context import ServiceContext, context
from service.problems import documented
from service.routes.jobs import job_report

router = APIRouter(prefix="/v1/jobs", responses=documented(401, 422, 503))
Ctx = Annotated[ServiceContext, Depends(context)]


@router.get("/{job_id}/compare/{other_id}",
            summary="Two jobs' reports side by side: every number of every analysis with "
                    "both values and the difference (other - this), layers matched by name",
            responses=documented(404, (409, "A job has no report yet (`status_of_job` says "
                                            "what it is)")))
async def compare_jobs(job_id: str, other_id: str, ctx: Ctx, tenant: Tenant) -> JSONResponse:
    def build() -> dict[str, Any]:
        return compare_reports(job_report(ctx, job_id, tenant), job_report(ctx, other_id, tenant),
                               source_a=f"job {job_id}", source_b=f"job {other_id}")

    return JSONResponse(await run_in_threadpool(build))
