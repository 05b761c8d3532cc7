"""The one-line progress bar ``wait`` draws on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from layerlens_client.models import Job

_WIDTH = 24


class ProgressLine:
    """Redraws one line (``\\r``) as a job advances; ends it with a newline on close."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._last = ""

    @classmethod
    def create(cls, enabled: bool | None, stream: TextIO | None = None) -> ProgressLine:
        """``enabled=None``: draw only when the stream (stderr by default) is a terminal."""
        stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(stream, "isatty", None)
            enabled = bool(isatty and isatty())
        return cls(stream if enabled else None)

    @staticmethod
    def render(job: Job) -> str:
        fraction = min(max(job.progress, 0.0), 1.0)
        filled = round(fraction * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        line = f"job {job.id[:12]} {job.status:<9} [{bar}] {fraction * 100:3.0f}%"
        return f"{line} {job.stage}" if job.stage and not job.done else line

    def show(self, job: Job) -> None:
        if self._stream is None:
            return
        line = self.render(job)
        if line == self._last:
            return
        padding = " " * max(0, len(self._last) - len(line))
        self._stream.write(f"\r{line}{padding}")
        self._stream.flush()
        self._last = line

    def close(self) -> None:
        if self._stream is not None and self._last:
            self._stream.write("\n")
            self._stream.flush()
            self._last = ""
