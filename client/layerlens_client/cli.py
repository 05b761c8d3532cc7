"""The ``layerlens`` command of the light client: ``layerlens check`` (the CI gate).

The other subcommands (analyze, serve, worker, demo, ...) run the engine or the
service and need the full ``layerlens`` package. Where that package is installed
too (the two share the ``layerlens`` command name, and whichever was installed
last owns the script), this command hands everything to the full one, so the
install order never matters.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from layerlens_client._version import __version__

EXIT_USAGE = 2
LIGHT_COMMANDS = ("check",)
USAGE = ("usage: layerlens check MODEL --dataset REF --policy POLICY.yaml --server URL "
         "[--junit FILE]\n"
         "(the light client; the other commands need the full layerlens package)")


def _full_cli() -> Callable[[Sequence[str]], int] | None:
    """The full package's ``main`` when ``layerlens`` (not only this client) is installed."""
    from importlib import metadata

    try:
        metadata.distribution("layerlens")
        from layerlens.cli import main as full_main
    except (metadata.PackageNotFoundError, ImportError):
        return None
    return full_main


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    full = _full_cli()
    if full is not None:
        return int(full(arguments))
    command = arguments[0] if arguments else None
    if command == "check":
        from layerlens_client.check import main as check

        return int(check(arguments[1:]))
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    if command == "--version":
        print(f"layerlens-client {__version__}")
        return 0
    if command is None or command.startswith("-"):
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    print(f"layerlens {command} needs the full layerlens package (pip install layerlens); "
          f"this is the light client, which offers: {', '.join(LIGHT_COMMANDS)}",
          file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
