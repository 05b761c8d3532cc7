"""The HTTP half of ``layerlens demo``: start the embedded service, go through its API.

Given exported model files, it starts ``layerlens serve`` as a real process,
uploads each file, queues a job with every analysis, shows its progress,
downloads the report and every artifact into a folder, and prints where
they are; then it uploads the training checkpoints as a series and queues one
job on the series, whose report follows the layers over training (``dynamics``).
It imports no torch: the model files come from the caller.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 1800.0
POLL_S = 0.5
SERIES = "demo-digits-cnn"
#: The series job: the analyses the dynamics draw, on a subsample (600 samples, t-SNE on 200
#: points per layer and checkpoint) to keep the demo short.
SERIES_JOB = {"analyses": [{"kind": "linear_probe"}, {"kind": "mutual_information"},
                           {"kind": "projection", "max_samples": 200}],
              "max_samples": 600}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = data_dir / "logs" / "serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LAYERLENS_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service stopped at start; see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service was not ready within {READY_TIMEOUT_S:.0f} s; see {log}")


def _show(label: str, job: Mapping[str, object], tty: bool, last: list[str]) -> None:
    line = (f"{label}: {job['status']} {100 * float(job['progress']):5.1f}%"  # type: ignore[arg-type]
            + (f" ({job['stage']})" if job.get("stage") else ""))
    if tty:
        print(f"\r{line:<70}", end="", flush=True)
    elif line.split("%")[0] != (last[0].split("%")[0] if last else ""):
        print(line, flush=True)
    last[:] = [line]


def _run_job(http: httpx.Client, label: str, path: Path, input_shape: str) -> dict[str, object]:
    model = http.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                      data={"input_shape": input_shape, "name": path.name}).raise_for_status()
    print(f"{label}: {len(model.json()['layers'])} layers", flush=True)
    return _follow(http, label, {"model_id": model.json()["id"], "dataset": "builtin:digits"})


def _run_series(http: httpx.Client, checkpoints: list[Path]) -> dict[str, object]:
    """Upload the checkpoints as one series (steps from their file names), queue a job on it."""
    for path in checkpoints:
        http.post("/v1/models", files={"file": (path.name, path.read_bytes())},
                  data={"series": SERIES}).raise_for_status()
    return _follow(http, "series", {"series": SERIES, "dataset": "builtin:digits",
                                    **SERIES_JOB})


def _follow(http: httpx.Client, label: str, body: dict[str, object]) -> dict[str, object]:
    """Queue the job ``body`` and show its progress to the end."""
    created = http.post("/v1/jobs", json=body).raise_for_status()
    job_id, tty = created.json()["id"], sys.stdout.isatty()
    last: list[str] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        _show(label, job, tty, last)
        if job["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    if tty:
        print(flush=True)
    if job["status"] != "succeeded":
        raise RuntimeError(f"{label} job {job_id} ended {job['status']}: {job.get('error')}")
    return job


def _download(http: httpx.Client, job_id: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(http.get(f"/v1/jobs/{job_id}/report").content)
    for artifact in http.get(f"/v1/jobs/{job_id}/artifacts").raise_for_status().json():
        answer = http.get(artifact["url"]).raise_for_status()
        (folder / artifact["name"]).write_bytes(answer.content)


def run_through_service(models: Mapping[str, Path], out: Path, *, input_shape: str,
                        keep_serving: bool = False, checkpoints: list[Path] | None = None
                        ) -> None:
    """Analyse each ``{label: model file}`` through a freshly started embedded service, then
    the ``checkpoints`` (ONNX files of one training run, step in each name) as a series."""
    data_dir = (out / "service").resolve()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start(data_dir, port)
    try:
        print(f"starting the embedded service at {url} (API + Celery worker; state in "
              f"{data_dir}) ...", flush=True)
        _wait_ready(url, process, data_dir / "logs" / "serve.log")
        with httpx.Client(base_url=url, timeout=300) as http:
            for label, path in models.items():
                print(f"{label}: uploading {path.name} and analysing it on builtin:digits, all "
                      "four analyses (about a minute on 2 cores) ...", flush=True)
                job = _run_job(http, label, path, input_shape)
                folder = (out / f"report-{label}").resolve()
                _download(http, str(job["id"]), folder)
                print(f"{label}: report {url}/v1/jobs/{job['id']}/report.html", flush=True)
                print(f"{label}: files  {folder}", flush=True)
            if checkpoints:
                print(f"series: uploading {len(checkpoints)} checkpoints of the training run "
                      f"({', '.join(path.name for path in checkpoints)}) as series "
                      f"'{SERIES}' and analysing them together ...", flush=True)
                job = _run_series(http, checkpoints)
                folder = (out / "report-series").resolve()
                _download(http, str(job["id"]), folder)
                print(f"series: dynamics report {url}/v1/jobs/{job['id']}/report.html"
                      "#dynamics", flush=True)
                print(f"series: files  {folder}", flush=True)
        if keep_serving:
            print(f"serving {url} until Ctrl-C ...", flush=True)
            process.wait()
        else:
            print(f"the service is stopped; `layerlens serve --data-dir {data_dir} --port {port}` "
                  "serves these reports again at the same addresses", flush=True)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
