"""The HTTP service under load: job-status polling latency, and API memory during a big upload.

Service: the real embedded deployment (``layerlens serve`` on a fresh data
folder: uvicorn + SQLite + two Celery worker processes), started by
``tests/e2e/launch.py``. A job exists to poll: the demo digits CNN
(untrained) exported to ONNX, uploaded, and a ``linear_probe`` job on
``builtin:digits`` with ``max_samples`` 200, polled AFTER it finished (so the
job's own computation does not share the cores with the measurement), and
a second job kept ``queued`` by pausing the jobs worker (SIGSTOP): a
finished job's status is answered from the API's memory, a queued or
running one is read from the database on every poll.

1. Polling. 50 concurrent clients, each on its own keep-alive connection,
   send ``GET /v1/jobs/{id}`` back to back (closed loop, no think time: the
   worst case; real clients wait the 2 s ``Retry-After``). Baseline in the
   same run: the same load on ``GET /healthz`` (same threadpool route, no
   database). The two alternate in rounds, so drift hits both alike.
   Target: job-status p95 under 50 ms. The load generator is a separate
   process (a lean asyncio HTTP/1.1 client) sharing the machine's cores
   with the server; its CPU share is printed.
2. Upload memory. A 200 MB multipart upload (random bytes: the worker
   refuses them with 422 after the API has stored them, which is fine
   here), generated chunk by chunk so the client holds 1 MiB at a time;
   the serve process's VmRSS is sampled every 20 ms. Baseline: its RSS
   just before the upload. Target: peak growth under 50 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

TARGET_P95_MS = 50.0
TARGET_GROWTH_MB = 50.0
CLIENTS = 50
ROUNDS = 2
ROUND_S = 5.0
WARMUP_S = 1.0
UPLOAD_MB = 200
CHUNK = 1024 * 1024
SAMPLE_S = 0.02


# --- the load generator (runs in its own process) ---------------------------------------

async def _client(host: str, port: int, path: str, stop_at: float, out: list[float],
                  errors: list[str]) -> None:
    """One keep-alive connection sending GET ``path`` back to back until ``stop_at``."""
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            if status != b"200":
                errors.append(status.decode())
    finally:
        writer.close()


async def _load(host: str, port: int, path: str, seconds: float) -> tuple[list[float], list[str],
                                                                           float]:
    out: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(_client(host, port, path, start + seconds, out, errors)
                           for _ in range(CLIENTS)))
    return out, errors, time.perf_counter() - start


def _load_process(host: str, port: int, path: str, seconds: float) -> None:
    """The load generator's process: one JSON line on stdout."""
    cpu = time.process_time()
    latencies, errors, wall = asyncio.run(_load(host, port, path, seconds))
    print(json.dumps({"latencies": latencies, "errors": errors, "wall": wall,
                      "client_cpu": time.process_time() - cpu}))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(url: str, path: str, seconds: float, server_pid: int) -> dict[str, Any]:
    """``CLIENTS`` closed-loop clients on ``path`` for ``seconds``, from a separate process."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    root = Path(__file__).resolve().parents[1]
    server_cpu = _cpu_seconds(server_pid)
    done = subprocess.run([sys.executable, "-m", "benchmarks.service_api", "--load", host, port,
                           path, str(seconds)], cwd=root, capture_output=True, text=True,
                          timeout=seconds + 60, check=True)
    server_cpu = _cpu_seconds(server_pid) - server_cpu  # includes the client's start-up time
    run = json.loads(done.stdout)
    if run["errors"]:
        raise RuntimeError(f"{len(run['errors'])} of {len(run['latencies'])} answers to {path} "
                           f"were not 200 (first: {run['errors'][0]})")
    run["server_cpu"] = server_cpu
    return run  # type: ignore[no-any-return]


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# --- the upload ----------------------------------------------------------------------------

def _vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class _RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self._done = pid, [], threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append(_vm_rss_mb(self.pid))
            self._done.wait(SAMPLE_S)

    def stop(self) -> list[float]:
        self._done.set()
        self.join()
        return self.samples


def _multipart(size: int, boundary: str, sent: list[float]) -> tuple[Iterator[bytes], int]:
    """A multipart body with one ``file`` part of ``size`` random bytes, and its length.

    One random MiB is repeated (the content does not matter here); ``sent``
    gets the time at which the last byte was handed to the client.
    """
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"random.onnx\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = os.urandom(CHUNK)

    def chunks() -> Iterator[bytes]:
        yield head
        left = size
        while left > 0:
            yield block[:min(left, CHUNK)]
            left -= CHUNK
        yield tail
        sent.append(time.perf_counter())

    return chunks(), len(head) + size + len(tail)


def measure_upload(url: str, pid: int) -> dict[str, float]:
    boundary = uuid.uuid4().hex
    sent: list[float] = []
    body, length = _multipart(UPLOAD_MB * 1_000_000, boundary, sent)
    baseline = statistics.median(_vm_rss_mb(pid) for _ in range(5))
    sampler = _RssSampler(pid)
    sampler.start()
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        answer = client.post("/v1/models", content=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length)})
    done = time.perf_counter()
    samples = sampler.stop()
    return {"status": answer.status_code, "baseline": baseline, "peak": max(samples),
            "after": _vm_rss_mb(pid), "n_samples": len(samples),
            "mb_s": UPLOAD_MB / (sent[0] - start), "send_s": sent[0] - start,
            "total_s": done - start}


# --- the jobs to poll ----------------------------------------------------------------------

@contextmanager
def jobs_worker_paused(serve_pid: int) -> Iterator[None]:
    """SIGSTOP the embedded jobs worker, so a new job stays ``queued`` and every poll of it
    reads the database (a finished job's status is answered from the API's memory)."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    paused = [int(pid) for pid in children
              if b"--queues=jobs" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    if not paused:
        raise RuntimeError("no jobs worker under the serve process")
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)

def finished_job(client: httpx.Client, folder: Path) -> tuple[str, str, str]:
    """Upload the demo CNN (ONNX), run a small linear_probe job; (model id, job id, status)."""
    from app.demo.model import DIGITS_SHAPE, digits_cnn, export_onnx
    from tests.e2e.launch import wait_for_job

    path = export_onnx(digits_cnn().eval(), folder / "cnn.onnx", DIGITS_SHAPE)
    with path.open("rb") as handle:
        model = client.post("/v1/models", files={"file": ("cnn.onnx", handle)},
                            data={"input_shape": "1,8,8"}).raise_for_status().json()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "dataset": "builtin:digits",
                                        "analyses": [{"kind": "linear_probe"}],
                                        "max_samples": 200}).raise_for_status().json()
    final = wait_for_job(client, job["id"], timeout_s=120)
    return model["id"], job["id"], str(final["status"])


def main() -> None:
    from tests.e2e.launch import embedded

    with tempfile.TemporaryDirectory() as folder, embedded(Path(folder) / "data") as service:
        pid = service.processes[0].pid
        with service.client() as client:
            model_id, job_id, status = finished_job(client, Path(folder))
        with service.client() as client, jobs_worker_paused(pid):
            queued = client.post("/v1/jobs", json={
                "model_id": model_id, "dataset": "builtin:digits",
                "analyses": [{"kind": "linear_probe"}]}).raise_for_status().json()["id"]
            paths = {"healthz": "/healthz", "finished": f"/v1/jobs/{job_id}",
                     "queued": f"/v1/jobs/{queued}"}
            for path in paths.values():  # warm-up: connections, threads, caches
                run_load(service.url, path, WARMUP_S, pid)
            load = os.getloadavg()
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
            for _ in range(ROUNDS):
                for name, path in paths.items():
                    runs[name].append(run_load(service.url, path, ROUND_S, pid))
            assert client.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
        upload = measure_upload(service.url, pid)

    print(f"service API: embedded `layerlens serve` (uvicorn, SQLite); {os.cpu_count()} cores "
          f"shared by the server and the load generator (a separate asyncio process); "
          f"{CLIENTS} closed-loop keep-alive clients, no think time, {ROUNDS} alternating "
          f"rounds of {ROUND_S:g} s per route; polled: a job that {status} (linear_probe, "
          "builtin:digits, max_samples 200) and a job kept queued (jobs worker paused)")
    print(f"machine load average before the rounds: {load[0]:.1f} (1 min) on {os.cpu_count()} "
          "cores: other processes on the machine share the cores too")
    print(f"{'route':<18} {'requests':>8} {'req/s':>6} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7} {'server CPU ms/req':>17} {'server cores':>12} {'client cores':>12}")
    p95 = {}
    for name in paths:
        latencies = sorted(x for run in runs[name] for x in run["latencies"])
        wall = sum(run["wall"] for run in runs[name])
        server = sum(run["server_cpu"] for run in runs[name])
        client_cpu = sum(run["client_cpu"] for run in runs[name])
        p95[name] = _quantile(latencies, 0.95) * 1000
        label = {"healthz": "GET /healthz", "finished": "GET job, finished",
                 "queued": "GET job, queued"}[name]
        print(f"{label:<18} {len(latencies):8d} {len(latencies) / wall:6.0f} "
              f"{_quantile(latencies, 0.50) * 1000:7.1f} {p95[name]:7.1f} "
              f"{_quantile(latencies, 0.99) * 1000:7.1f} {server / len(latencies) * 1000:17.2f} "
              f"{server / wall:12.2f} {client_cpu / wall:12.2f}")
    for name, how in (("finished", "answered from memory"),
                      ("queued", "read from SQLite at most every 0.25 s")):
        verdict = "ok" if p95[name] < TARGET_P95_MS else "MISSED"
        print(f"job status, {name} ({how}): p95 {p95[name]:.1f} ms = "
              f"{p95[name] / p95['healthz']:.2f}x healthz; target < {TARGET_P95_MS:g} ms: "
              f"{verdict}")
    print(f"(closed loop: mean latency = {CLIENTS} clients / throughput, so latency here is "
          "mostly queueing behind the one API process; 'cores': CPU seconds per wall second)")

    growth = upload["peak"] - upload["baseline"]
    verdict = "ok" if growth < TARGET_GROWTH_MB else "MISSED"
    print(f"upload: {UPLOAD_MB} MB multipart POST /v1/models (random bytes, answered "
          f"{upload['status']:.0f}), serve process VmRSS sampled every {SAMPLE_S * 1000:g} ms "
          f"({upload['n_samples']:.0f} samples)")
    print(f"{'RSS before MB':>13} {'peak MB':>8} {'growth MB':>9} {'after MB':>8} "
          f"{'send s':>6} {'MB/s':>6} {'answer s':>8}  target growth < {TARGET_GROWTH_MB:g} MB")
    print(f"{upload['baseline']:13.1f} {upload['peak']:8.1f} {growth:9.1f} {upload['after']:8.1f} "
          f"{upload['send_s']:6.1f} {upload['mb_s']:6.0f} {upload['total_s']:8.1f}  {verdict}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        _load_process(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    else:
        main()
