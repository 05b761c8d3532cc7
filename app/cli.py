"""The commands of the full package: ``layerlens analyze``, ``serve``, ``api``, ``worker``,
``migrate``, ``keys`` and ``demo``.

The ``layerlens`` program itself is layerlens-client's (``layerlens_client.cli``): it owns
``check`` and finds these commands through the ``layerlens.commands`` entry point that
pyproject.toml declares for :func:`add_commands`.

Exit status: 0 success, 2 bad input (one line on stderr, no traceback),
1 an internal error (one line; ``LAYERLENS_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.flags import add_option_flags, flag, options_from_args
from layerlens.errors import InputError
from layerlens.spec import kinds, load_spec_file, spec_from_names

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's commands to the ``layerlens`` parser; each sets ``run``."""
    analyze = commands.add_parser(
        "analyze", help="analyse a model on a dataset in-process and write a report folder")
    analyze.add_argument("model", type=Path, nargs="+",
                         help="ONNX model, TorchScript or .pt2 archive; several files are the "
                              "checkpoints of one training run (a series: the report's "
                              "dynamics), each at the step the last integer of its file name "
                              "gives (epoch_012.onnx: 12) unless --steps gives them")
    analyze.add_argument("--dataset", required=True,
                         help="builtin:digits|iris|wine|breast_cancer|ib12, a .npz/.csv path, "
                              "or s3://bucket/key.npz|.csv (downloaded first; endpoint "
                              "LAYERLENS_S3_ENDPOINT_URL or AWS_ENDPOINT_URL, AWS credentials)")
    which = analyze.add_mutually_exclusive_group()
    which.add_argument("--analyses", help="comma-separated analysis kinds, default parameters "
                                          f"({','.join(kinds())})")
    which.add_argument("--spec", type=Path, help='JSON file {"analyses": [...]}')
    analyze.add_argument("--steps", help="a series: the training step of each model file, "
                                         "comma-separated in the files' order (e.g. 0,5,10)")
    add_option_flags(analyze)
    analyze.add_argument("--out", type=Path, required=True, help="report folder")

    serve = commands.add_parser(
        "serve", help="the embedded service: HTTP API plus a local Celery worker, no servers")
    _service_options(serve, port=8000)
    api = commands.add_parser("api", help="the HTTP API alone (workers run elsewhere)")
    _service_options(api, port=8000)
    worker = commands.add_parser("worker", help="a Celery worker (one per GPU)")
    worker.add_argument("--queues", default="jobs,inspect",
                        help="comma-separated queues to consume (jobs,inspect)")
    worker.add_argument("--concurrency", type=_positive_int, default=1)
    migrate = commands.add_parser("migrate", help="alembic upgrade head on LAYERLENS_DATABASE_URL")
    api_keys = commands.add_parser("keys", help="create, list or revoke API keys")
    api_keys.add_argument("action", choices=("create", "list", "revoke"))
    api_keys.add_argument("key_id", nargs="?", help="revoke: the key's id or prefix")
    api_keys.add_argument("--tenant", help="create: the tenant the key acts for")
    api_keys.add_argument("--name", default="", help="create: a label, e.g. ci-main")
    api_keys.add_argument("--data-dir", type=Path, help="embedded state folder")

    demo = commands.add_parser(
        "demo", help="train a small digits CNN, export it to ONNX and TorchScript, and analyse "
                     "both through the embedded service's HTTP API")
    demo.add_argument("--out", type=Path, default=Path("demo-output"))
    demo.add_argument("--seconds", type=float, default=5.0, help="training time budget")
    demo.add_argument("--keep-serving", action="store_true",
                      help="keep the service running after the reports are done")

    analyze.set_defaults(run=_guarded(_run_analyze))
    demo.set_defaults(run=_guarded(_run_demo))
    for service_command in (serve, api, worker, migrate, api_keys):
        service_command.set_defaults(run=_guarded(_run_service))


def _service_options(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--data-dir", type=Path,
                        help="folder of the embedded state (default ./layerlens-data, "
                             "or LAYERLENS_DATA_DIR)")


def _run_service(args: argparse.Namespace) -> int:
    """serve, api, worker, migrate: the service layer, imported only for these commands."""
    if getattr(args, "data_dir", None) is not None:
        os.environ["LAYERLENS_DATA_DIR"] = str(args.data_dir)
    from app import commands
    from infra.config import Settings
    from infra.db.session import SchemaNotMigrated

    settings = Settings.from_env()
    try:
        if args.command == "migrate":
            commands.migrate(settings)
            return EXIT_OK
        if args.command == "worker":
            return commands.run_worker(args.queues.split(","), args.concurrency)
        if args.command == "keys":
            return commands.keys(settings, args.action, tenant=args.tenant, name=args.name,
                                 key_id=args.key_id)
        if args.command == "api":
            return commands.run_api(settings, args.host, args.port)
        return commands.run_serve(settings, args.host, args.port)
    except (SchemaNotMigrated, commands.Refused) as exc:
        print(f"layerlens: error: {exc}", file=sys.stderr)
        return EXIT_INPUT


def _run_analyze(args: argparse.Namespace) -> int:
    """The analysis runs in a child process (:mod:`app.child`): a crash of the model's
    runtime is one line and exit 1, not a bare signal."""
    from app.child import ChildFailed, analyze_in_child

    if args.spec is not None:
        spec = load_spec_file(args.spec)
    elif args.analyses is not None:
        spec = spec_from_names(args.analyses)
    else:
        spec = None  # every analysis
    options = options_from_args(args, spec)
    for model in args.model:
        if not model.is_file():
            raise InputError(f"model file '{model}' does not exist")
    series = _series(args.model, args.steps)
    model = args.model[-1] if series is None else series[-1][0]
    started = time.perf_counter()
    try:
        with _local_dataset(args.dataset) as dataset_file:
            report = analyze_in_child(model, args.dataset, dataset_file, args.out, options,
                                      series=series)
    except ChildFailed as exc:
        print(f"layerlens: error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    elapsed = time.perf_counter() - started
    what = (model.name if series is None else
            f"{len(series)} checkpoints (steps {', '.join(str(s) for _, s in series)})")
    print(f"analysed {len(report['activations']['layers'])} layers of {what} on "
          f"{report['dataset']['ref']} ({report['dataset']['n_samples']} samples) in "
          f"{elapsed:.1f} s")
    print(f"report: {(args.out / 'report.html').resolve()}")
    for warning in report["warnings"]:
        where = warning["analysis"] + (f", layer {warning['layer']}" if warning["layer"] else "")
        print(f"layerlens: warning: {where} failed: {warning['message']}", file=sys.stderr)
    return _exit_status(report["analyses"])


def _series(models: list[Path], steps: str | None) -> list[tuple[Path, int]] | None:
    """The checkpoints ``(file, step)`` in step order, or None for one model file and no
    ``--steps``. Raises :class:`InputError` (a step count that does not match, a step given
    twice, a file name without an integer and no ``--steps``)."""
    from layerlens.series import checkpoint_steps, parse_steps

    if len(models) == 1 and steps is None:
        return None
    given = None if steps is None else parse_steps(steps)
    found = checkpoint_steps([model.name for model in models], given, steps_name="--steps")
    return sorted(zip(models, found, strict=True), key=lambda pair: pair[1])


@contextlib.contextmanager
def _local_dataset(ref: str) -> Iterator[Path | None]:
    """An ``s3://bucket/key.npz|.csv`` object downloaded into a temporary folder for the
    analysis (the engine reads local files only); None for every other reference. The
    object store is LAYERLENS_S3_ENDPOINT_URL when set, else boto3's own choice
    (AWS_ENDPOINT_URL, or AWS); credentials are boto3's."""
    if not ref.startswith("s3://"):
        yield None
        return
    from infra import s3_datasets

    found = s3_datasets.parse_ref(ref)
    s3 = s3_datasets.client(os.environ.get("LAYERLENS_S3_ENDPOINT_URL", ""))
    with tempfile.TemporaryDirectory(prefix="layerlens-dataset-") as folder:
        path = Path(folder) / f"dataset{found.suffix}"
        s3_datasets.download(s3, found, path)
        yield path


def _exit_status(sections: dict[str, Any]) -> int:
    """0 when every analysis ran (some layers may have failed: the warnings say which);
    2 when one failed on bad input, 1 when one failed otherwise. The report is written."""
    errors = [section["error_type"] for section in sections.values() if "failed" in section]
    if not errors:
        return EXIT_OK
    return EXIT_INPUT if "invalid_input" in errors else EXIT_INTERNAL


def _run_demo(args: argparse.Namespace) -> int:
    """Train and export in-process, then analyse both files through the embedded service."""
    from app.demo.model import DIGITS_SHAPE, train_and_export
    from app.demo.run import run_through_service

    files, checkpoints = train_and_export(args.out, seconds=args.seconds)
    run_through_service(files, args.out, input_shape=",".join(map(str, DIGITS_SHAPE)),
                        keep_serving=args.keep_serving, checkpoints=checkpoints)
    return EXIT_OK


def _guarded(handler: Handler) -> Handler:
    """``handler`` with the exit-status contract: bad input 2, interrupted 130, a bug 1."""

    def run(args: argparse.Namespace) -> int:
        from layerlens.runtime import keep_freed_memory_for_reuse

        keep_freed_memory_for_reuse()
        try:
            return handler(args)
        except InputError as exc:  # options named as this command's flags (--input-shape)
            print(f"layerlens: error: {exc.spelled(flag)}", file=sys.stderr)
            return EXIT_INPUT
        except KeyboardInterrupt:
            print("layerlens: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if os.environ.get("LAYERLENS_DEBUG"):
                raise
            print(f"layerlens: internal error: {type(exc).__name__}: {exc} "
                  "(set LAYERLENS_DEBUG=1 for the traceback)", file=sys.stderr)
            return EXIT_INTERNAL

    return run
