"""Client and AsyncClient against the real embedded service (``layerlens serve``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from layerlens_client import (
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    DatasetInfo,
    Job,
    Model,
    NotFoundError,
    Report,
)
from layerlens_client.report import LinearProbeSection, ProbeLayer
from tests.e2e import launch

pytestmark = pytest.mark.slow

ANALYSES = [{"kind": "linear_probe"}]
MAX_SAMPLES = 200
JOB_TIMEOUT_S = 600
#: Generous: the CPU may be shared with other test runs.
REQUEST_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launch.Service]:
    with launch.embedded(tmp_path_factory.mktemp("client-service")) as running:
        yield running


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("client-data") / "small.npz"
    np.savez(path, x=rng.normal(size=(120, 64)).astype(np.float32),
             y=rng.integers(0, 4, size=120))
    return path


def _check_uploads(model: Model, dataset: DatasetInfo, onnx: Path) -> None:
    assert model.format == "onnx" and model.name == "digits-cnn"
    assert model.sha256 == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert model.layers and all(layer.name for layer in model.layers)
    assert dataset.n_samples == 120 and dataset.x_shape[-1] == 64
    assert dataset.n_classes == 4 and dataset.ref == f"dataset:{dataset.id}"


def _check_finished(job: Job, report: Report, document: dict[str, Any], out: Path,
                    paths: list[Path], listed: list[Any]) -> None:
    assert job.status == "succeeded", job
    assert job.done and job.progress == 1.0
    section = report.analyses.linear_probe
    assert isinstance(section, LinearProbeSection)
    probe = section.layers
    assert probe and all(isinstance(row, ProbeLayer) and 0.0 <= row.test_accuracy <= 1.0
                         for row in probe)
    assert report.model_dump(mode="json", exclude_unset=True) == document
    assert json.loads((out / "report.json").read_text()) == document
    assert listed, "a finished job lists its artifacts (at least the report page)"
    assert {p.name for p in paths} == {"report.json"} | {a.name for a in listed}
    for artifact in listed:
        path = out / artifact.name
        assert path.is_file() and path.stat().st_size == artifact.size_bytes
        assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact.sha256


def _check_bad_spec(error: BadRequestError) -> None:
    assert error.status_code == 422
    assert "bogus" in error.detail and error.detail in str(error)
    assert error.problem["status"] == 422


def test_client_end_to_end(service: launch.Service, cnn_files: dict[str, Path],
                           npz_file: Path, tmp_path: Path) -> None:
    with Client(service.url, timeout=REQUEST_TIMEOUT_S) as client:
        assert client.health() is True
        model = client.upload_model(cnn_files["onnx"], name="digits-cnn")
        dataset = client.upload_dataset(npz_file)
        _check_uploads(model, dataset, cnn_files["onnx"])
        assert client.get_model(model.id).sha256 == model.sha256
        assert client.get_dataset(dataset.id).n_samples == 120

        job = client.create_job(model.id, "builtin:digits", ANALYSES, max_samples=MAX_SAMPLES)
        assert job.status in {"queued", "running", "succeeded"}
        assert job.model_id == model.id and job.dataset == "builtin:digits"
        done = client.wait(job, timeout=JOB_TIMEOUT_S, poll_interval=0.25, progress=False)
        report = client.report(done.id)
        document = client.report_json(done.id)
        listed = client.artifacts(done.id)
        out = tmp_path / "downloaded"
        paths = client.download_artifacts(done.id, out)
        _check_finished(done, report, document, out, paths, listed)
        assert client.download_artifacts(done.id, out) == paths  # all present: no refetch

        with pytest.raises(ConflictError):
            client.cancel(done.id)
        with pytest.raises(NotFoundError):
            client.get_job("no-such-job")
        with pytest.raises(BadRequestError) as caught:
            client.create_job(model.id, "builtin:digits", [{"kind": "linear_probe", "bogus": 1}])
        _check_bad_spec(caught.value)


def test_async_client_end_to_end(service: launch.Service, cnn_files: dict[str, Path],
                                 npz_file: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncClient(service.url, timeout=REQUEST_TIMEOUT_S) as client:
            assert await client.health() is True
            model = await client.upload_model(cnn_files["onnx"], name="digits-cnn")
            dataset = await client.upload_dataset(npz_file)
            _check_uploads(model, dataset, cnn_files["onnx"])
            assert (await client.get_model(model.id)).id == model.id
            assert (await client.get_dataset(dataset.id)).id == dataset.id

            job = await client.create_job(model.id, "builtin:digits", ANALYSES,
                                          max_samples=MAX_SAMPLES)
            done = await client.wait(job.id, timeout=JOB_TIMEOUT_S, poll_interval=0.25,
                                     progress=False)
            report = await client.report(done)
            document = await client.report_json(done)
            listed = await client.artifacts(done)
            out = tmp_path / "downloaded"
            paths = await client.download_artifacts(done, out)
            _check_finished(done, report, document, out, paths, listed)

            with pytest.raises(ConflictError):
                await client.cancel(done.id)
            with pytest.raises(NotFoundError):
                await client.get_job("no-such-job")
            with pytest.raises(BadRequestError) as caught:
                await client.create_job(model.id, "builtin:digits",
                                        [{"kind": "linear_probe", "bogus": 1}])
            _check_bad_spec(caught.value)

    asyncio.run(main())


def _queue_and_cancel(client: Client, model_id: str, count: int) -> list[str]:
    """``count`` more jobs, canceled at once so the worker is not kept busy."""
    ids = []
    for seed in range(count):
        job = client.create_job(model_id, "builtin:digits", ANALYSES, max_samples=MAX_SAMPLES,
                                seed=100 + seed)
        client.cancel(job.id)
        ids.append(job.id)
    return ids


def test_pagination_visits_each_job_once(service: launch.Service,
                                         cnn_files: dict[str, Path]) -> None:
    with Client(service.url, timeout=REQUEST_TIMEOUT_S) as client:
        model = client.upload_model(cnn_files["onnx"])
        created = _queue_and_cancel(client, model.id, 3)
        # the same Idempotency-Key replays the job instead of creating another
        replayed = [client.create_job(model.id, "builtin:digits", ANALYSES, seed=7,
                                      idempotency_key="pagination-test").id for _ in range(2)]
        assert replayed[0] == replayed[1]
        client.cancel(replayed[0])

        every = [job.id for job in client.list_jobs(page_size=200)]
        one_by_one = [job.id for job in client.list_jobs(page_size=1)]
        assert len(one_by_one) == len(set(one_by_one)) == len(every)
        assert one_by_one == every  # newest first, both ways
        assert set(created) | {replayed[0]} <= set(one_by_one)
        canceled = list(client.list_jobs(status="canceled", page_size=2))
        assert canceled and all(job.status == "canceled" for job in canceled)
        assert model.id in {m.id for m in client.list_models(page_size=1)}
        assert all(isinstance(d, DatasetInfo) for d in client.list_datasets(page_size=1))

    async def walk() -> list[str]:
        async with AsyncClient(service.url, timeout=REQUEST_TIMEOUT_S) as client:
            return [job.id async for job in client.list_jobs(page_size=1)]

    assert asyncio.run(walk()) == every
