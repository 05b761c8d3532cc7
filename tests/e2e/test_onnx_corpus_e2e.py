"""Hostile-ish input: the ONNX models shipped inside the installed ``onnx`` package's
backend test data (``onnx/backend/test/data``: operator tests, PyTorch-converted
modules, real architectures with 224x224 inputs), uploaded to the embedded service
and, when accepted, analysed on a random dataset of the model's input shape with the
gradient-free analyses, plus activation maximisation where the input is small.

Each upload is 201 or a clean 422 problem; each job ends ``succeeded`` or ``failed``
with a reason and a message; no 5xx, no hang (every wait is bounded), no worker lost,
and the service still runs a job afterwards. ``make test`` takes every 20th model
(the architectures under ``light/`` take minutes each on 2 cores); ``make reliability``
sets ``LAYERLENS_FUZZ_ALL=1`` and takes all of them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.e2e import launch, reliability

pytestmark = pytest.mark.slow
CORPUS_ROOT = Path(onnx.__file__).parent / "backend" / "test" / "data"
CORPUS = sorted(CORPUS_ROOT.rglob("*.onnx"))
FULL = os.environ.get("LAYERLENS_FUZZ_ALL") == "1"
CHOSEN = CORPUS if FULL else [p for p in CORPUS if p.parts[-3] != "light"][::20]
ANALYSES = [{"kind": "linear_probe"}, {"kind": "projection", "method": "pca"},
            {"kind": "mutual_information"}]
#: Activation maximisation runs the network once per layer and step: on 224x224 inputs
#: (the ``light/`` architectures) that is minutes per model on 2 cores, so only smaller
#: inputs get it.
ACT_MAX = {"kind": "activation_maximization", "steps": 8, "max_units": 2}
ACT_MAX_INPUT_VALUES = 4096
N_SAMPLES = 24
FAILURE_REASONS = {"invalid_input", "crashed", "memory", "timeout"}
outcomes: Counter[str] = Counter()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with launch.embedded(tmp_path_factory.mktemp("onnx-corpus"),
                         inspect_timeout="600") as running:
        yield running


@pytest.fixture(scope="module")
def datasets(service, tmp_path_factory):
    """Uploaded random datasets by input shape: {shape: ref}."""
    folder, refs = tmp_path_factory.mktemp("corpus-data"), {}

    def ref_for(shape: tuple[int, ...]) -> str:
        if shape not in refs:
            rng = np.random.default_rng(0)
            path = folder / f"x{'x'.join(map(str, shape)) or 'scalar'}.npz"
            np.savez(path, x=rng.standard_normal((N_SAMPLES, *shape)).astype(np.float32),
                     y=np.arange(N_SAMPLES) % 2)
            with service.client() as client:
                answer = client.post("/v1/datasets",
                                     files={"file": (path.name, path.read_bytes())})
            assert answer.status_code == 201, answer.text
            refs[shape] = answer.json()["ref"]
        return refs[shape]

    return ref_for


def _name(path: Path) -> str:
    return str(path.relative_to(CORPUS_ROOT))


@pytest.mark.parametrize("path", CHOSEN, ids=_name)
def test_a_corpus_model_is_refused_cleanly_or_analysed(service, datasets, path):
    with service.client(timeout=900) as client:
        upload = client.post("/v1/models", files={"file": ("model.onnx", path.read_bytes())})
        assert upload.status_code in (201, 422), upload.text
        if upload.status_code == 422:
            assert upload.headers["content-type"] == "application/problem+json"
            assert upload.json()["detail"].strip()
            outcomes["refused at upload (422)"] += 1
            return
        model = upload.json()
        small = int(np.prod(model["input_shape"])) <= ACT_MAX_INPUT_VALUES
        job = client.post("/v1/jobs", json={
            "model_id": model["id"], "dataset": datasets(tuple(model["input_shape"])),
            "max_samples": N_SAMPLES, "analyses": ANALYSES + [ACT_MAX] * small})
        assert job.status_code == 202, job.text
        outcomes["jobs submitted"] += 1
        done = launch.wait_for_job(client, job.json()["id"], timeout_s=900)
    assert done["status"] in ("succeeded", "failed"), done
    outcomes["run twice"] += done["attempts"] != 1
    if done["status"] == "failed":
        assert done["reason"] in FAILURE_REASONS and done["error"], done
        outcomes[f"failed ({done['reason']})"] += 1
    else:
        outcomes["succeeded"] += 1
    assert all(process.poll() is None for process in service.processes), service.logs()


def test_the_service_is_unharmed_after_the_corpus(service, cnn_files):
    """Afterwards a real model's job still succeeds on the same workers; tally the run."""
    model_id = launch.upload_model(service, cnn_files["onnx"])
    with service.client() as client:
        job = client.post("/v1/jobs", json={"model_id": model_id, "dataset": "builtin:digits",
                                            "max_samples": 200,
                                            "analyses": [{"kind": "linear_probe"}]}).json()
        done = launch.wait_for_job(client, job["id"], timeout_s=300)
    tally = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()) if n)
    print(f"\nONNX corpus: {len(CHOSEN)} of {len(CORPUS)} models: {tally}")
    reliability.record(f"ONNX test corpus, {len(CHOSEN)} models ({tally})", injected=0,
                       submitted=outcomes["jobs submitted"] + 1,
                       lost=int(done["status"] != "succeeded"), twice=outcomes["run twice"],
                       hostile=len(CHOSEN), server_errors=service.server_errors())
    assert done["status"] == "succeeded", done
    assert service.server_errors() == 0, service.statuses
