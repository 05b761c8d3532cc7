"""The ``layerlens`` command: ``check`` (the CI gate), plus the commands other packages add.

This client owns the one ``layerlens`` console script. A package installed beside it
adds commands through the ``layerlens.commands`` entry-point group: each entry point
names a function that receives the subparsers of the ``layerlens`` parser, adds its
commands and sets ``run`` on each (a function of the parsed arguments that returns the
exit status). The full layerlens package adds analyze, serve, api, worker, migrate,
keys and demo that way (``app.cli:add_commands``); with only this client installed,
``layerlens`` offers ``check``. ``compare`` (two reports side by side) is listed here and
runs the full package's :mod:`layerlens.comparison`.

Usage errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from layerlens_client._version import __version__

ENTRY_POINTS = "layerlens.commands"
EXIT_USAGE = 2
LIGHT_COMMANDS = ("check",)


class UsageParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"layerlens: error: {message} (see '{self.prog} --help')\n")


def _plugins() -> list[metadata.EntryPoint]:
    """The installed ``layerlens.commands`` entry points, in name order."""
    return sorted(metadata.entry_points(group=ENTRY_POINTS), key=lambda entry: entry.name)


def _version(plugins: Sequence[metadata.EntryPoint]) -> str:
    dists = [f"{p.dist.name} {p.dist.version}" for p in plugins if p.dist is not None]
    return ", ".join(dict.fromkeys([f"layerlens-client {__version__}", *dists]))


def build_parser(plugins: Sequence[metadata.EntryPoint] | None = None) -> argparse.ArgumentParser:
    """The ``layerlens`` parser with ``check`` and every installed plugin's commands."""
    plugins = _plugins() if plugins is None else plugins
    parser = UsageParser(prog="layerlens", description="Look inside trained neural networks.")
    parser.add_argument("--version", action="version", version=_version(plugins))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    # `check` parses its own arguments (layerlens_client.check); listed here for --help
    commands.add_parser("check", add_help=False,
                        help="fail a CI build whose model breaks a policy (layerlens check -h)")
    compare = commands.add_parser(
        "compare", help="two reports side by side: every number of every analysis, both "
                        "values and the difference (b - a), layers matched by name")
    compare.add_argument("report_a", type=Path, help="report.json, or a report folder")
    compare.add_argument("report_b", type=Path, help="report.json, or a report folder")
    compare.add_argument("--out", type=Path,
                         help="write the comparison JSON here (default: stdout)")
    compare.set_defaults(run=_compare)
    for plugin in plugins:
        plugin.load()(commands)
    return parser


def _compare(args: argparse.Namespace) -> int:
    """``layerlens compare``: the JSON of :func:`layerlens.comparison.compare_reports` (the
    same as ``GET /v1/jobs/{id}/compare/{other_id}``) on stdout, or in ``--out`` with a
    one-line summary on stdout. Exit 2 with one line when a report cannot be read."""
    from layerlens.comparison import ComparisonError, compare_reports, load_report

    try:
        document = compare_reports(load_report(args.report_a), load_report(args.report_b),
                                   source_a=str(args.report_a), source_b=str(args.report_b))
        text = json.dumps(document, indent=2)
        if args.out is None:
            print(text)
            return 0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    except (ComparisonError, OSError) as exc:
        print(f"layerlens compare: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = [row for section in document["sections"].values() for row in section]
    differ = sum(row["difference"] != 0 for row in rows)
    print(f"{len(rows)} numbers in {len(document['sections'])} sections, {differ} differ or "
          f"are in one report only: {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["check"]:
        from layerlens_client.check import main as check

        return int(check(arguments[1:]))
    plugins = _plugins()
    command = arguments[0] if arguments else ""
    if not plugins and command and not command.startswith("-"):
        print(f"layerlens {command} needs the full layerlens package (pip install layerlens); "
              f"this is the light client, which offers: {', '.join(LIGHT_COMMANDS)}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        args = build_parser(plugins).parse_args(arguments)
    except SystemExit as exc:  # usage errors (status 2), --help and --version (status 0)
        return int(exc.code or 0)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
