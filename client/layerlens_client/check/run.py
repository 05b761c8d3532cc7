"""Where the report comes from: the server (through the client) or the engine in-process."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerlens_client.check.policy import Policy

#: Job failure reasons that mean the input was refused (exit 2); the rest are infrastructure.
INPUT_REASONS = frozenset({"invalid_input"})


class InputProblem(Exception):
    """The model, dataset or options were refused (exit 2)."""


class InfrastructureProblem(Exception):
    """The server, a worker or the engine failed (exit 3)."""


@dataclass
class Produced:
    report: dict[str, Any]
    image_url: Callable[[str], str]
    report_url: str | None


def remote(server: str, model: Path, dataset: str, policy: Policy, *,
           input_shape: Sequence[int] | None, timeout_s: float, api_key: str | None,
           baseline_model: Path | None = None) -> Produced:
    """Upload, queue, wait and fetch the report through the light client. With
    ``baseline_model`` (used when a rule needs it), that model is uploaded too and the job
    compares with it (``compare_to``)."""
    from layerlens_client import Client, errors

    try:
        with Client(server, api_key=api_key) as client:
            uploaded = client.upload_model(model, input_shape=input_shape)
            compare_to = None
            if policy.needs_baseline_model and baseline_model is not None:
                try:
                    compare_to = client.upload_model(baseline_model, input_shape=input_shape).id
                except errors.BadRequestError as exc:
                    raise InputProblem(f"the baseline model {baseline_model}: {exc}") from exc
            job = client.create_job(uploaded.id, dataset, policy.job_analyses(),
                                    layers=policy.layers, max_samples=policy.max_samples,
                                    seed=policy.seed, compare_to=compare_to)
            job = client.wait(job, timeout=timeout_s)
            if job.status != "succeeded":
                message = (f"job {job.id} ended {job.status}"
                           + (f" ({job.reason})" if job.reason else "")
                           + (f": {job.error}" if job.error else ""))
                if job.reason == "analysis_failed":  # what finished is in its partial report
                    message += (f"; the report of what finished: {server.rstrip('/')}"
                                f"/v1/jobs/{job.id}/report.html")
                if job.reason in INPUT_REASONS:
                    raise InputProblem(message)
                raise InfrastructureProblem(message)
            report = client.report_json(job.id)
    except (errors.BadRequestError, errors.NotFoundError, errors.ConflictError,
            errors.AuthenticationError) as exc:
        raise InputProblem(str(exc)) from exc
    except errors.LayerlensError as exc:  # connection, timeout, rate limit, 5xx, wait timeout
        raise InfrastructureProblem(f"{server}: {exc}") from exc
    base = f"{server.rstrip('/')}/v1/jobs/{job.id}"
    return Produced(report, lambda name: f"{base}/artifacts/{name}", f"{base}/report.html")


def local(model: Path, dataset: str, policy: Policy, out: Path, *,
          input_shape: Sequence[int] | None, baseline_model: Path | None = None) -> Produced:
    """Run the engine in this process (needs the full layerlens package); with
    ``baseline_model`` (used when a rule needs it) the similarity analysis compares with it
    on the same samples."""
    try:
        from layerlens.analyze import analyze
        from layerlens.errors import InputError
        from layerlens.options import JobOptions
    except ImportError as exc:
        raise InputProblem("without --server, layerlens check runs the analyses in-process "
                           "and needs the full layerlens package (pip install layerlens); "
                           "with only the light client, pass --server URL") from exc
    try:
        compare_to = (str(baseline_model) if policy.needs_baseline_model
                      and baseline_model is not None else None)
        options = JobOptions.parse({"analyses": policy.job_analyses(), "layers": policy.layers,
                                    "max_samples": policy.max_samples, "seed": policy.seed,
                                    "input_shape": input_shape, "compare_to": compare_to})
        report = analyze(model, dataset, out, options).model_dump(mode="json")
    except InputError as exc:
        if "compare_to" in exc.options:  # the engine's name for the baseline model
            raise InputProblem(f"the baseline model {baseline_model}: "
                               f"{str(exc).removeprefix('compare_to: ')}") from exc
        raise InputProblem(str(exc)) from exc
    except Exception as exc:
        raise InfrastructureProblem(f"the analysis failed: {type(exc).__name__}: {exc}") from exc
    page = str((out / "report.html").resolve())
    _refuse_failed_analyses(report, page)
    return Produced(report, lambda name: str((out / name).resolve()), page)


def _refuse_failed_analyses(report: dict[str, Any], page: str) -> None:
    """As a remote job that ends failed: an analysis that failed on bad input is exit 2,
    one that failed otherwise exit 3; the report of what finished is named."""
    for kind, section in report.get("analyses", {}).items():
        if isinstance(section, dict) and "failed" in section:
            message = f"{kind} failed: {section['failed']}; the report of what finished: {page}"
            if section.get("error_type") == "invalid_input":
                raise InputProblem(message)
            raise InfrastructureProblem(message)


def read_report(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputProblem(f"cannot read the {what} report {path}: {exc}") from exc
    if not isinstance(data, dict) or "analyses" not in data:
        raise InputProblem(f"{path} is not a layerlens report.json")
    return data
