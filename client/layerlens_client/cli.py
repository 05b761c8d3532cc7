"""The ``layerlens`` command: ``check`` (the CI gate), plus the commands other packages add.

This client owns the one ``layerlens`` console script. A package installed beside it
adds commands through the ``layerlens.commands`` entry-point group: each entry point
names a function that receives the subparsers of the ``layerlens`` parser, adds its
commands and sets ``run`` on each (a function of the parsed arguments that returns the
exit status). The full layerlens package adds analyze, serve, api, worker, migrate,
keys and demo that way (``app.cli:add_commands``); with only this client installed,
``layerlens`` offers ``check``.

Usage errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
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
    for plugin in plugins:
        plugin.load()(commands)
    return parser


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
