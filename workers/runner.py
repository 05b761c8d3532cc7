"""The child process that opens an uploaded model: ``python -m workers.runner COMMAND ...``.

It speaks one JSON object per line on stdout (``progress``, ``result`` and
``error`` events) and knows nothing of SQL, Celery or storage; its parent
(:mod:`workers.sandbox`) does. Exit status 2 means the input was refused, 3
that memory ran out (the ``error`` event says which); anything else non-zero
is a crash.

Commands
--------
inspect-model PATH [--input-shape C,H,W] [--name NAME] [--max-bytes N]
                                            format, input shape and layers
inspect-dataset PATH --ref NAME             n_samples, x_shape, n_classes
analyze JOB.json                            the report folder (see ``_analyze``)

Messages name an upload by ``--name`` / ``--ref`` (the name it was uploaded
under), never by its scratch file, and options by their API field names
(``input_shape``), never by ``layerlens analyze``'s flags.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerlens.errors import InputError, ShapeMismatchError, is_allocation_failure, one_line

if TYPE_CHECKING:  # the child imports the engine only once it knows its command
    from layerlens.options import JobOptions

#: Stored activations may take 1/MEMORY_BUDGET_SHARE of the child's address-space limit.
MEMORY_BUDGET_SHARE = 4


def within_address_space(options: JobOptions, limit: int) -> JobOptions:
    """``options`` with the stored-activation budget lowered to a share of
    the address-space ``limit`` (bytes), leaving room for the runtimes, the model and the
    solvers; unchanged without a limit."""
    if limit == resource.RLIM_INFINITY:
        return options
    return options.model_copy(update={"memory_budget": min(options.memory_budget,
                                                           limit // MEMORY_BUDGET_SHARE)})


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _ints(text: str | None) -> tuple[int, ...] | None:
    return None if not text else tuple(int(part) for part in text.split(","))


def _inspect_model(path: Path, input_shape: tuple[int, ...] | None,
                   name: str | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """``max_bytes``: most the model may take with its external data (an upload's limit);
    its data files come inside the upload, never from beside it."""
    from layerlens.models import load_model
    from layerlens.models.onnx_files import MAX_MODEL_BYTES
    from layerlens.models.sniff import sniff_format

    try:
        model = load_model(path, input_shape=input_shape, device="cpu", name=name,
                           max_bytes=min(max_bytes or MAX_MODEL_BYTES, MAX_MODEL_BYTES),
                           data_beside=False, inputs=None)
    except ShapeMismatchError as exc:
        if input_shape is None and sniff_format(path.read_bytes(),
                                                name or path.name) == "torchscript":
            raise InputError(f"model file '{name or path.name}' is TorchScript, which does "
                             "not record its input shape: upload it with the form field "
                             "input_shape (one sample, e.g. 1,8,8)") from exc
        raise
    return {"format": model.format, "input_shape": list(model.input_spec.shape),
            "layers": [{"name": layer.name, "op": layer.op, "shape": list(layer.shape)}
                       for layer in model.layers]}


def _inspect_dataset(path: Path, ref: str) -> dict[str, Any]:
    from layerlens.data.resolve import load_dataset_file

    data = load_dataset_file(path, ref)
    return {"n_samples": data.n_samples, "x_shape": list(data.x.shape),
            "n_classes": data.n_classes}


def _analyze(job_file: Path) -> dict[str, Any]:
    """Run ``layerlens.analyze`` as the job file says.

    Job file: ``{"model": path, "model_name": the name messages use,
    "dataset": {"ref": str, "file": path | null, "allow_local": bool (the command line's
    local paths; a worker's job never)},
    "out": dir, "options": the job options (:class:`layerlens.options.JobOptions`),
    "series": [{"path", "name", "step"}] (optional: the checkpoints of a training run,
    analysed by :func:`layerlens.series.analyze_series`; "model" is then ignored)}``.
    Progress events of a series also carry ``checkpoint`` (from 0, in step order) and
    ``checkpoints``.
    """
    from layerlens.analyze import analyze
    from layerlens.data import resolve_dataset
    from layerlens.data.resolve import load_dataset_file
    from layerlens.options import JobOptions
    from layerlens.series import Checkpoint, analyze_series

    job = json.loads(job_file.read_text())
    source = job["dataset"]
    data = (load_dataset_file(Path(source["file"]), source["ref"]) if source.get("file")
            else resolve_dataset(source["ref"], allow_local=bool(source.get("allow_local"))))
    options = JobOptions.parse(job["options"])
    options = within_address_space(options, resource.getrlimit(resource.RLIMIT_AS)[0])

    def progress(stage: str, step: int, total: int, metrics: dict[str, float]) -> None:
        emit("progress", stage=stage, step=step, total=total)

    if job.get("series"):
        def checkpoint_progress(checkpoint: int, checkpoints: int, stage: str, step: int,
                                total: int, metrics: dict[str, float]) -> None:
            emit("progress", stage=stage, step=step, total=total, checkpoint=checkpoint,
                 checkpoints=checkpoints)

        series = sorted((Checkpoint(Path(entry["path"]), int(entry["step"]), entry["name"])
                         for entry in job["series"]), key=lambda checkpoint: checkpoint.step)
        analyze_series(series, data, job["out"], options, progress=checkpoint_progress)
    else:
        analyze(job["model"], data, job["out"], options, progress=progress,
                model_name=job.get("model_name"))
    return {"out": job["out"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.runner")
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("inspect-model")
    model.add_argument("path", type=Path)
    model.add_argument("--input-shape")
    model.add_argument("--name", help="the file's name in messages (as it was uploaded)")
    model.add_argument("--max-bytes", type=int,
                       help="most the model may take with its external data, expanded")
    dataset = commands.add_parser("inspect-dataset")
    dataset.add_argument("path", type=Path)
    dataset.add_argument("--ref", required=True)
    job = commands.add_parser("analyze")
    job.add_argument("job_file", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect-model":
            result = _inspect_model(args.path, _ints(args.input_shape), args.name,
                                    args.max_bytes)
        elif args.command == "inspect-dataset":
            result = _inspect_dataset(args.path, args.ref)
        else:
            from layerlens.runtime import keep_freed_memory_for_reuse

            keep_freed_memory_for_reuse()
            result = _analyze(args.job_file)
    except InputError as exc:
        emit("error", message=str(exc), reason="invalid_input", options=list(exc.options))
        return 2
    except MemoryError:
        emit("error", message="the analysis ran out of memory (the job's memory limit)",
             reason="memory")
        return 3
    except Exception as exc:  # torch's or onnxruntime's allocator failing under the limit
        if not is_allocation_failure(exc):
            raise
        emit("error", message=f"the analysis ran out of memory: {one_line(exc)}",
             reason="memory")
        return 3
    emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
