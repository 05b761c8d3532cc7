"""``layerlens analyze`` runs the model in a child process, as the service's workers do.

A model file is code: its runtime (onnxruntime, torch) can crash on it. The
child (``python -m workers.runner analyze JOB``) loads the model, captures and
writes the report folder; a crash ends the child, not the command, and the
command says in one line what crashed and on which model. Unlike the
service's sandbox, this child is not confined: it reads the user's own files
and writes the ``--out`` folder.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from layerlens.errors import InputError
from layerlens.options import JobOptions

#: Lines of the child's stderr kept for a crash message.
STDERR_LINES = 20


class ChildFailed(Exception):
    """The analysis process crashed or ran out of memory; the message is one line."""


def analyze_in_child(model: Path, dataset_ref: str, dataset_file: Path | None, out: Path,
                     options: JobOptions, *,
                     series: list[tuple[Path, int]] | None = None) -> dict[str, Any]:
    """Run the analysis of ``model`` in a child process; the report document it wrote.

    ``dataset_file``: a local file already holding the dataset (an s3 object downloaded
    by the caller), else None and the child resolves ``dataset_ref`` (local paths too).
    ``series``: the checkpoints ``(file, step)`` of a training run, analysed together
    (``model`` is then the last one). Raises :class:`InputError` (the child refused the
    input; its ``options`` kept for spelling) or :class:`ChildFailed`.
    """
    out = out.resolve()
    job: dict[str, Any] = {
        "model": str(model.resolve()), "model_name": model.name, "out": str(out),
        "dataset": {"ref": dataset_ref, "allow_local": True,
                    "file": None if dataset_file is None else str(dataset_file.resolve())},
        "options": options.model_dump(mode="json")}
    if series is not None:
        job["series"] = [{"path": str(path.resolve()), "name": path.name, "step": step}
                         for path, step in series]
    with tempfile.TemporaryDirectory(prefix="layerlens-analyze-") as folder:
        job_file = Path(folder) / "job.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        with (Path(folder) / "stderr.log").open("w+b") as stderr:
            done = subprocess.run(
                [sys.executable, "-m", "workers.runner", "analyze", str(job_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, check=False)
            stderr.seek(0)
            errors = stderr.read().decode("utf-8", "replace").splitlines()[-STDERR_LINES:]
    events = [_event(line) for line in done.stdout.decode("utf-8", "replace").splitlines()]
    for event in events:
        if event.get("event") == "error":
            if event.get("reason") == "invalid_input":
                raise InputError(event.get("message", "invalid input"),
                                 options=event.get("options", ()))
            raise ChildFailed(f"{event.get('message')} (analysing {model.name})")
    if done.returncode != 0 or not any(event.get("event") == "result" for event in events):
        raise ChildFailed(_crash(done.returncode, errors, model))
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report


def _event(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}  # the model's own prints
    return event if isinstance(event, dict) else {}


def _crash(returncode: int, stderr: list[str], model: Path) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return (f"the analysis process crashed ({name}) while analysing {model.name}: the "
                "model's runtime failed on this file")
    last = next((line.strip() for line in reversed(stderr) if line.strip()), "no message")
    return f"the analysis process failed (exit {returncode}) on {model.name}: {last}"
