"""Through the real service: a job over a limit ends ``failed`` with its reason, and the next
job on the same worker succeeds."""

from __future__ import annotations

import pytest
import torch

from tests.e2e import launch, reliability
from tests.workers.hostile import MemoryHog, Spinner

pytestmark = pytest.mark.slow

#: The analysis child may use 3 GiB of address space; a job's wall-clock limit is
#: JOB_TIME_LIMIT - 60 s = 40 s.
SETTINGS = {"job_memory": str(3 * 1024**3), "job_time_limit": "100"}


def _upload(client, path, shape: str) -> str:
    answer = client.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                         data={"input_shape": shape})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _run(client, model_id: str, dataset: str, **body) -> dict:
    job = client.post("/v1/jobs", json={"model_id": model_id, "dataset": dataset,
                                        "analyses": [{"kind": "linear_probe"}], **body})
    assert job.status_code == 202, job.text
    return launch.wait_for_job(client, job.json()["id"], timeout_s=300)


def test_limits_fail_the_job_with_a_reason_and_the_worker_goes_on(tmp_path, cnn_files):
    torch.jit.save(torch.jit.script(MemoryHog()), str(tmp_path / "hog.pt"))
    torch.jit.save(torch.jit.script(Spinner(10)), str(tmp_path / "spin.pt"))
    with launch.embedded(tmp_path / "service", **SETTINGS) as service, service.client() as http:
        hog = _upload(http, tmp_path / "hog.pt", "4")        # one sample: 400 MB, fine
        failed = _run(http, hog, "builtin:iris")              # 150 samples: 60 GB
        assert (failed["status"], failed["reason"]) == ("failed", "memory"), failed
        assert "memory" in failed["error"]

        spin = _upload(http, tmp_path / "spin.pt", "4")
        slow = _run(http, spin, "builtin:iris")
        assert (slow["status"], slow["reason"]) == ("failed", "timeout"), slow

        cnn = _upload(http, cnn_files["onnx"], "1,8,8")
        fine = _run(http, cnn, "builtin:digits", max_samples=200)
        assert fine["status"] == "succeeded", fine
        assert fine["attempts"] == 1
        reliability.record("jobs over the memory and time limits", injected=2, submitted=3,
                           lost=0, twice=0, hostile=2, server_errors=service.server_errors())
        assert service.server_errors() == 0, service.statuses
