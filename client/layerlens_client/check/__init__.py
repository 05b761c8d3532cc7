"""``layerlens check``: fail a CI build whose model breaks a policy.

Exit status: 0 every rule holds, 1 a rule failed, 2 bad input or policy,
3 the infrastructure failed (server unreachable, worker lost).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from layerlens_client.check import output
from layerlens_client.check.evaluate import evaluate
from layerlens_client.check.policy import PolicyError, load_policy
from layerlens_client.check.run import (
    InfrastructureProblem,
    InputProblem,
    local,
    read_report,
    remote,
)

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_INFRA = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"layerlens check: error: {message}\n")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers like 1,8,8, got '{text}'") from exc
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,8, got '{text}'")
    return shape


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layerlens check",
                     description="Analyse MODEL and check the report against a policy.")
    parser.add_argument("model", type=Path, help="ONNX model or TorchScript archive")
    parser.add_argument("--dataset", required=True, help="dataset reference, e.g. builtin:digits")
    parser.add_argument("--policy", required=True, type=Path, help="policy YAML (or JSON)")
    parser.add_argument("--server", default=os.environ.get("LAYERLENS_URL"),
                        help="layerlens service URL (default $LAYERLENS_URL); "
                             "without it the analyses run in-process")
    parser.add_argument("--baseline", type=Path, help="report.json to compare with (max_drop)")
    parser.add_argument("--baseline-model", type=Path,
                        help="model file whose layers min_cka_to_baseline compares with "
                             "(e.g. the released model)")
    parser.add_argument("--junit", type=Path, help="write JUnit XML here")
    parser.add_argument("--summary", type=Path,
                        help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--out", type=Path, default=Path("layerlens-check"),
                        help="folder for report.json (and, in-process, the whole report)")
    parser.add_argument("--input-shape", type=_shape, help="shape of one sample, e.g. 1,8,8")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for the server's job (3600)")
    return parser


def _check(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    if not args.model.is_file():
        raise InputProblem(f"model file '{args.model}' does not exist")
    baseline = read_report(args.baseline, "baseline") if args.baseline else None
    if policy.needs_baseline and baseline is None:
        raise PolicyError("a rule uses max_drop, which compares with a baseline: pass "
                          "--baseline REPORT.json (e.g. the report.json of main's last run)")
    if policy.needs_baseline_model:
        if args.baseline_model is None:
            raise PolicyError("a rule uses min_cka_to_baseline, which compares with a baseline "
                              "model: pass --baseline-model FILE (e.g. the released model)")
        if not args.baseline_model.is_file():
            raise InputProblem(f"baseline model '{args.baseline_model}' does not exist")
    started = time.monotonic()
    if args.server:
        produced = remote(args.server, args.model, args.dataset, policy,
                          input_shape=args.input_shape, timeout_s=args.timeout,
                          api_key=os.environ.get("LAYERLENS_API_KEY"),
                          baseline_model=args.baseline_model)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(produced.report, indent=2))
    else:
        produced = local(args.model, args.dataset, policy, args.out,
                         input_shape=args.input_shape, baseline_model=args.baseline_model)
    outcomes = evaluate(policy, produced.report, baseline)
    print(output.table(outcomes))
    print(f"report: {produced.report_url}")
    if args.junit:
        output.junit(outcomes, args.junit, suite=f"{args.model.name} on {args.dataset}",
                     seconds=time.monotonic() - started)
    if args.summary:
        output.summary(outcomes, args.summary,
                       title=f"`{args.model.name}` on `{args.dataset}`, policy "
                             f"`{args.policy.name}`",
                       image_url=produced.image_url, report_url=produced.report_url)
    return EXIT_PASS if all(o.passed for o in outcomes) else EXIT_FAIL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``layerlens check``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _check(args)
    except (PolicyError, InputProblem) as exc:
        print(f"layerlens check: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except InfrastructureProblem as exc:
        print(f"layerlens check: infrastructure failure: {exc}", file=sys.stderr)
        return EXIT_INFRA
    except KeyboardInterrupt:
        print("layerlens check: interrupted", file=sys.stderr)
        return 130
