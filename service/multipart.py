"""A streaming ``multipart/form-data`` reader: file parts go straight to spool files.

The body is never held in memory: each chunk is parsed as it arrives, each
file part is hashed and written to disk, and a body whose files together
exceed the size limit is refused with 413 as soon as it crosses the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from infra.storage import Spool, TooLarge
from service.problems import Problem

MAX_FIELD_BYTES = 64 * 1024
#: Room for form fields and part headers on top of the file size limit.
FORM_OVERHEAD = 1024 * 1024


@dataclass(frozen=True)
class FilePart:
    """One file part: the name the client gave it, and its bytes spooled to disk."""

    filename: str
    spool: Spool


@dataclass
class Form:
    """The parsed form: small text fields, and the file parts spooled to disk, in order."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)

    def discard(self) -> None:
        for part in self.files:
            part.spool.discard()


class _Reader:
    def __init__(self, spool_dir: Path, limit: int, file_field: str, max_files: int) -> None:
        self.form = Form()
        self.spool_dir, self.limit, self.file_field = spool_dir, limit, file_field
        self.max_files = max_files
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._buffer = bytearray()
        self._to_file = False

    def on_part_begin(self) -> None:
        self._headers, self._buffer, self._to_file = {}, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == self.file_field and b"filename" in options:
            if len(self.form.files) == self.max_files:
                raise Problem(422, f"send exactly one '{self.file_field}' part"
                              if self.max_files == 1 else
                              f"send at most {self.max_files} '{self.file_field}' parts (a "
                              ".zip or .tar of the folder holds any number of files)")
            used = sum(part.spool.size for part in self.form.files)
            filename = options[b"filename"].decode("utf-8", "replace")
            self.form.files.append(FilePart(filename, Spool(self.spool_dir, self.limit - used)))
            self._to_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._to_file:
            self.form.files[-1].spool.write(data[start:end])
            return
        self._buffer += data[start:end]
        if len(self._buffer) > MAX_FIELD_BYTES:
            raise Problem(413, f"form field '{self._name}' exceeds {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self._to_file:
            self.form.fields[self._name] = self._buffer.decode("utf-8", "replace")


async def read_form(request: Request, *, spool_dir: Path, limit: int,
                    file_field: str = "file", max_files: int = 1) -> Form:
    """Parse the request body: 1 to ``max_files`` file parts that take ``limit`` bytes
    together. The caller owns (and must finish or discard) the spools of ``form.files``."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise Problem(415, "send the upload as multipart/form-data with a "
                           f"'{file_field}' file part")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise Problem(413, f"the upload ({declared} bytes) exceeds the limit of {limit} bytes",
                      limit_bytes=limit)
    reader = _Reader(spool_dir, limit, file_field, max_files)
    callbacks = {name: getattr(reader, name) for name in dir(reader) if name.startswith("on_")}
    parser = MultipartParser(options[b"boundary"], callbacks=callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except TooLarge as exc:
        reader.form.discard()
        raise Problem(413, f"the upload exceeds the limit of {limit} bytes",
                      limit_bytes=limit) from exc
    except ClientDisconnect:
        reader.form.discard()
        raise
    except Problem:
        reader.form.discard()
        raise
    except Exception as exc:  # the parser's own errors: a malformed body
        reader.form.discard()
        raise Problem(400, f"malformed multipart body: {exc}") from exc
    if not reader.form.files:
        raise Problem(422, f"the form has no '{file_field}' file part")
    return reader.form
