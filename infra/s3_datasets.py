"""``s3://bucket/key`` dataset references: which ones the service accepts, and reading them.

- The API checks a job's reference (:func:`check_allowed`, then :func:`head`): the key
  ends in ``.npz``/``.csv``, it lies in a bucket or under a prefix of
  ``LAYERLENS_DATASET_BUCKETS`` and not in the service's own artifact store, and the object
  exists. A HEAD request: the API never reads the object.
- A worker downloads the object into the job's scratch folder (:func:`download`) before
  the sandboxed child starts: the child has no network and reads only its folder.
- ``layerlens analyze --dataset s3://...`` downloads it into a temporary folder.

Every read goes to the object store at ``LAYERLENS_S3_ENDPOINT_URL`` (AWS when empty) with
boto3's usual credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, a
role). The engine (``layerlens/``) knows nothing of S3: it gets a local file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from layerlens.errors import DatasetError

SCHEME = "s3://"
SUFFIXES = (".npz", ".csv")
#: Seconds the API waits for the object store to connect or answer a HEAD.
HEAD_TIMEOUT_S = 5.0


class S3DatasetError(DatasetError):
    """The reference is refused, or names no object the service may read (HTTP 422,
    ``layerlens analyze`` exit 2, a job ``failed`` with reason ``invalid_input``)."""


class S3Unavailable(DatasetError):
    """The object store cannot be reached or did not answer (HTTP 503; a job ``failed``
    with reason ``dataset_unavailable``)."""


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def suffix(self) -> str:
        """``.npz`` or ``.csv`` (lower case)."""
        return PurePosixPath(self.key).suffix.lower()


def is_s3_ref(ref: str) -> bool:
    return ref.startswith(SCHEME)


def parse_ref(ref: str) -> S3Object:
    """``s3://bucket/key.npz`` -> its bucket and key; :class:`S3DatasetError` saying what is
    wrong with a malformed one."""
    bucket, _, key = ref.removeprefix(SCHEME).partition("/")
    if not bucket or not key or key.endswith("/"):
        raise S3DatasetError(f"'{ref}' is not an object reference: use s3://bucket/key.npz "
                             "or s3://bucket/key.csv")
    if any(part in (".", "..") for part in key.split("/")) or any(
            ord(char) < 32 for char in ref):
        raise S3DatasetError(f"'{ref}': a key may not hold '.' or '..' segments or control "
                             "characters")
    found = S3Object(bucket, key)
    if found.suffix not in SUFFIXES:
        raise S3DatasetError(f"{found} is not a .npz or .csv object (the key must end in "
                             ".npz or .csv)")
    return found


def _under(key: str, prefix: str) -> bool:
    return not prefix or key.startswith(prefix + "/")


def check_allowed(found: S3Object, buckets: Sequence[str], storage_url: str) -> None:
    """Refuse an object outside every ``bucket`` or ``bucket/prefix`` of ``buckets`` (the
    setting ``dataset_buckets``), and any object in the artifact store at ``storage_url``
    (it holds every tenant's uploads)."""
    storage = urlparse(storage_url)
    if storage.scheme == "s3" and found.bucket == storage.netloc and _under(
            found.key, storage.path.strip("/")):
        raise S3DatasetError(f"{found} is in the service's own artifact store; put datasets "
                             "in a dataset bucket, or upload them with POST /v1/datasets")
    for entry in buckets:
        bucket, _, prefix = entry.partition("/")
        if found.bucket == bucket and _under(found.key, prefix.strip("/")):
            return
    allowed = ", ".join(f"{SCHEME}{entry}" for entry in buckets)
    raise S3DatasetError(f"{found} is outside the allowed dataset buckets ("
                         + (allowed or "none configured: set LAYERLENS_DATASET_BUCKETS")
                         + ")")


def client(endpoint_url: str = "", *, timeout_s: float | None = None) -> Any:
    """A boto3 S3 client on ``endpoint_url`` (AWS when empty), from a session of its own
    (creating clients from boto3's default session is not thread-safe)."""
    import boto3
    from botocore.config import Config

    config = None if timeout_s is None else Config(
        connect_timeout=timeout_s, read_timeout=timeout_s,
        retries={"max_attempts": 2, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None,
                                          config=config)


def head(s3: Any, found: S3Object) -> int:
    """The object's size in bytes; raises :class:`S3DatasetError` when it is missing, empty
    or not readable, :class:`S3Unavailable` when the store does not answer."""
    with _translated(found):
        size = int(s3.head_object(Bucket=found.bucket, Key=found.key)["ContentLength"])
    if size == 0:
        raise S3DatasetError(f"{found} is empty")
    return size


def download(s3: Any, found: S3Object, destination: Path) -> None:
    """Copy the object to the local file ``destination`` (same errors as :func:`head`)."""
    with _translated(found):
        s3.download_file(found.bucket, found.key, str(destination))


@contextmanager
def _translated(found: S3Object) -> Iterator[None]:
    """botocore's errors as :class:`S3DatasetError` (the store answered 4xx) or
    :class:`S3Unavailable` (no answer, a 5xx, no credentials), each in one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound") or status == 404:
            raise S3DatasetError(f"no object {found} in the object store") from exc
        if code in ("403", "AccessDenied", "Forbidden") or status == 403:
            raise S3DatasetError(f"the object store refuses to read {found} "
                                 "(403 access denied)") from exc
        if 400 <= status < 500:
            raise S3DatasetError(f"the object store refused {found}: {status} "
                                 f"{code}".rstrip()) from exc
        raise S3Unavailable(f"the object store failed on {found}: {status} "
                            f"{code}".rstrip()) from exc
    except BotoCoreError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise S3Unavailable(f"cannot read {found} from the object store: {reason}") from exc
