"""The reliability table of ``make reliability``.

Fault and fuzz tests call :func:`record` with what they observed; when
``LAYERLENS_RELIABILITY_LOG`` names a file, each record is appended to it as a
JSON line. ``python -m tests.e2e.reliability LOG`` prints the table.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

COLUMNS = ("fault", "injected", "jobs submitted", "jobs lost", "jobs run twice",
           "hostile inputs", "5xx seen", "time to recover")


def record(fault: str, *, injected: int, submitted: int, lost: int, twice: int,
           hostile: int = 0, server_errors: int, recover_s: float | None = None) -> None:
    """Append one row. ``recover_s``: seconds from the failed server's return until what the
    fault interrupted works again (the test says what that is)."""
    log = os.environ.get("LAYERLENS_RELIABILITY_LOG")
    if not log:
        return
    row = {"fault": fault, "injected": injected, "submitted": submitted, "lost": lost,
           "twice": twice, "hostile": hostile, "server_errors": server_errors,
           "recover_s": recover_s}
    with open(log, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def table(rows: list[dict[str, object]]) -> str:
    def cells(row: dict[str, object]) -> list[str]:
        recover = row["recover_s"]
        return [str(row["fault"]), str(row["injected"]), str(row["submitted"]), str(row["lost"]),
                str(row["twice"]), str(row["hostile"]), str(row["server_errors"]),
                "" if recover is None else f"{float(recover):.2f} s"]  # type: ignore[arg-type]

    totals = {"fault": "total", "recover_s": None,
              **{key: sum(int(r[key]) for r in rows)  # type: ignore[call-overload]
                 for key in ("injected", "submitted", "lost", "twice", "hostile",
                             "server_errors")}}
    body = [list(COLUMNS), *map(cells, rows), cells(totals)]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    if not rows:
        print(f"no reliability records in {path}: did the tests run?", file=sys.stderr)
        return 1
    print(table(rows))
    bad = sum(int(r["lost"]) + int(r["twice"]) + int(r["server_errors"]) for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
