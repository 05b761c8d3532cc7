"""Content-addressed blob storage: a local directory or an S3-compatible bucket.

Every blob lives under ``blobs/<sha256>``: identical bytes are stored once.
Writes go through a temporary file while hashing, so memory stays flat
whatever the upload's size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

CHUNK = 1024 * 1024
HEAD_BYTES = 16


class TooLarge(Exception):
    """The stream exceeded the size limit; nothing was stored."""


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size_bytes: int


class Storage(Protocol):
    def put_file(self, path: Path, blob: StoredBlob | None = None, *,
                 move: bool = False) -> StoredBlob:
        """Store a local file (``move``: the file may be taken away); returns its address."""

    def read_chunks(self, sha256: str) -> Iterator[bytes]:
        """The blob's bytes in chunks; ``FileNotFoundError`` if absent."""

    def fetch(self, sha256: str, destination: Path) -> None:
        """Copy the blob to a local file."""

    def exists(self, sha256: str) -> bool: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""


def hash_file(path: Path) -> StoredBlob:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return StoredBlob(digest.hexdigest(), size)


class Spool:
    """A temporary file that hashes what is written into it and enforces a size limit."""

    def __init__(self, folder: Path, limit: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix="upload-")
        self.path = Path(name)
        self._file = os.fdopen(handle, "wb")
        self._digest = hashlib.sha256()
        self.size = 0
        self.limit = limit
        self.head = b""  # the first bytes, to recognise the file's format

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"upload exceeds the limit of {self.limit} bytes")
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> StoredBlob:
        self._file.close()
        return StoredBlob(self._digest.hexdigest(), self.size)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class LocalStorage:
    """Blobs as files under ``root/blobs/ab/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool_dir = root / "tmp"
        (root / "blobs").mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise FileNotFoundError(sha256)
        return self.root / "blobs" / sha256[:2] / sha256

    def put_file(self, path: Path, blob: StoredBlob | None = None, *,
                 move: bool = False) -> StoredBlob:
        blob = blob or hash_file(path)
        target = self._path(blob.sha256)
        if target.exists():
            if move:
                path.unlink()
            return blob
        target.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(path, target)
        else:
            staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(path, staged)
            os.replace(staged, target)  # atomic: readers never see half a blob
        return blob

    def read_chunks(self, sha256: str) -> Iterator[bytes]:
        with self._path(sha256).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def fetch(self, sha256: str, destination: Path) -> None:
        shutil.copyfile(self._path(sha256), destination)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def ping(self) -> None:
        if not (self.root / "blobs").is_dir():
            raise OSError(f"storage folder {self.root} is missing")


class S3Storage:
    """Blobs as objects ``<prefix>blobs/<sha256>`` in an S3-compatible bucket (MinIO, AWS)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None,
                 spool_dir: Path) -> None:
        import boto3

        self.bucket, self.prefix, self.spool_dir = bucket, prefix, spool_dir
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{sha256}"

    def put_file(self, path: Path, blob: StoredBlob | None = None, *,
                 move: bool = False) -> StoredBlob:
        blob = blob or hash_file(path)
        if not self.exists(blob.sha256):
            self._s3.upload_file(str(path), self.bucket, self._key(blob.sha256))
        if move:
            path.unlink()
        return blob

    def read_chunks(self, sha256: str) -> Iterator[bytes]:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        except self._s3.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(sha256) from exc
        yield from body.iter_chunks(CHUNK)

    def fetch(self, sha256: str, destination: Path) -> None:
        self._s3.download_file(self.bucket, self._key(sha256), str(destination))

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def ping(self) -> None:
        self._s3.head_bucket(Bucket=self.bucket)


def open_storage(url: str, *, endpoint_url: str = "", spool_dir: Path | None = None) -> Storage:
    """``file:///abs/dir`` or ``s3://bucket[/prefix]``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if parsed.scheme == "s3":
        prefix = parsed.path.strip("/")
        return S3Storage(parsed.netloc, f"{prefix}/" if prefix else "", endpoint_url,
                         spool_dir or Path(tempfile.gettempdir()) / "layerlens-spool")
    raise ValueError(f"LAYERLENS_STORAGE_URL must be file:///dir or s3://bucket, got {url!r}")
