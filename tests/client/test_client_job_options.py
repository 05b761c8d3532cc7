"""``create_job`` takes every job option ``POST /v1/jobs`` takes (the engine's one schema,
:mod:`layerlens.options`), sync and async, and sends what it is given."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest

from layerlens.options import JobOptions, option_fields
from layerlens_client import AsyncClient, Client
from layerlens_client._base import JOB_OPTIONS
from tests.client.scripted import Answer, Recorded, ScriptedApp, job_body, serving

#: A value for every option (a test below fails when the schema gains one without a value).
VALUES: dict[str, Any] = {
    "analyses": [{"kind": "linear_probe", "test_fraction": 0.25}, "projection", "similarity"],
    "layers": ["conv*", "fc"], "max_samples": 300, "seed": 7, "input_shape": (1, 8, 8),
    "mean": [0.5], "std": [0.25], "batch_size": 64, "memory_budget": "512MB",
    "max_features": 1024, "device": "cpu", "compare_to": "m2", "input_name": "input_ids",
    "sequence_pooling": "last",
}
#: What each becomes in the request body, where that differs from the value given.
SENT: dict[str, Any] = {
    "analyses": [{"kind": "linear_probe", "test_fraction": 0.25}, {"kind": "projection"},
                 {"kind": "similarity"}],
    "input_shape": [1, 8, 8],
}


@pytest.fixture
def app() -> ScriptedApp:
    app = ScriptedApp()

    @app.route("POST", "/v1/jobs")
    def create(request: Recorded) -> Answer:
        return Answer(202, job_body("j1"), {"location": "/v1/jobs/j1"})

    return app


@pytest.fixture
def url(app: ScriptedApp) -> Iterator[str]:
    with serving(app) as base:
        yield base


@pytest.mark.parametrize("client", [Client, AsyncClient])
def test_create_job_has_a_keyword_for_every_job_option(client: type) -> None:
    parameters = inspect.signature(client.create_job).parameters
    options = set(option_fields())
    missing = options - set(parameters)
    assert not missing, (f"{client.__name__}.create_job lacks the job options "
                         f"{sorted(missing)} that POST /v1/jobs takes (layerlens/options.py)")
    for name in options - {"analyses"}:
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[name].default is None, f"{name}: None leaves it to the server"
    assert set(JOB_OPTIONS) == options - {"analyses"}


def test_the_sync_and_async_signatures_are_the_same() -> None:
    sync = inspect.signature(Client.create_job)
    asynchronous = inspect.signature(AsyncClient.create_job)
    assert list(sync.parameters.values()) == list(asynchronous.parameters.values())


def test_every_option_has_a_test_value() -> None:
    assert set(VALUES) == set(option_fields())


def _sent(app: ScriptedApp) -> dict[str, Any]:
    (request,) = app.to("POST", "/v1/jobs")
    body: dict[str, Any] = json.loads(request.body)
    return body


def _check_body(body: dict[str, Any]) -> None:
    expected = {"model_id": "m1", "dataset": "builtin:digits",
                **{name: SENT.get(name, value) for name, value in VALUES.items()}}
    assert body == expected
    # and the engine's schema (what the server validates the body with) takes every value
    options = JobOptions.model_validate({k: v for k, v in body.items()
                                         if k not in {"model_id", "dataset"}})
    assert options.memory_budget == 512 * 1024**2 and options.std == [0.25]


def test_a_created_job_carries_every_option(app: ScriptedApp, url: str) -> None:
    with Client(url) as client:
        job = client.create_job("m1", "builtin:digits", **VALUES)
    assert job.id == "j1"
    _check_body(_sent(app))


def test_an_async_created_job_carries_every_option(app: ScriptedApp, url: str) -> None:
    async def main() -> None:
        async with AsyncClient(url) as client:
            await client.create_job("m1", "builtin:digits", **VALUES)

    asyncio.run(main())
    _check_body(_sent(app))


def test_options_left_none_are_not_sent(app: ScriptedApp, url: str) -> None:
    with Client(url) as client:
        client.create_job("m1", "builtin:digits", layers="fc", input_shape="3,32,32",
                          memory_budget=2**30)
    assert _sent(app) == {"model_id": "m1", "dataset": "builtin:digits", "layers": ["fc"],
                          "input_shape": [3, 32, 32], "memory_budget": 2**30}
