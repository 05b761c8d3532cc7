"""layerlens-client: the light client of the layerlens HTTP API (httpx + pydantic, no torch).

>>> from layerlens_client import Client
>>> with Client("http://127.0.0.1:8000") as client:          # doctest: +SKIP
...     model = client.upload_model("cnn.onnx")
...     job = client.create_job(model.id, "builtin:digits", [{"kind": "linear_probe"}])
...     job = client.wait(job)
...     report = client.report(job.id)                       # a typed Report
...     probe = report.analyses.linear_probe

``AsyncClient`` has the same methods, awaited. Every error is a
:class:`LayerlensError`; see :mod:`layerlens_client.errors`. The report's models
(generated from the engine's registry of analysis kinds) are in
:mod:`layerlens_client.report`.
"""

from layerlens_client._client import AsyncClient, Client
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
from layerlens_client.models import (
    FINAL_STATUSES,
    AnalysisState,
    Artifact,
    DatasetInfo,
    Job,
    Layer,
    Model,
    Page,
)
from layerlens_client.report import Report

__all__ = [
    "FINAL_STATUSES",
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AnalysisState",
    "Artifact",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "DatasetInfo",
    "Job",
    "Layer",
    "LayerlensError",
    "Model",
    "NotFoundError",
    "Page",
    "RateLimitError",
    "Report",
    "ServerError",
    "WaitTimeoutError",
    "__version__",
]
