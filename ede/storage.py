"""The one gateway to object storage: bytes and JSON to and from any fsspec URL.

Every layer reads and writes through here, so these rules have one owner: writes
are atomic (a unique temporary sibling, then a move: a crash never leaves a
half-written object, and two writers never touch each other's temporaries), a URL
in a message never shows credentials, and a missing or unreadable JSON file is one
error naming the file. Writes never create a bucket: a missing one is an operator's
typo or an environment not set up, and a bucket made on the fly is one nobody
configured (region, retention, access). A storage failure the operator fixes (bucket
missing, access denied, no credentials, endpoint unreachable) is one line naming the
URL, the operation and the cause (`storage_error`). The core (the estimator's
save/load) reaches storage only through this module, never through fsspec itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec


def shown_url(url: str) -> str:
    """URL for messages; a ``user:secret@`` part, should anyone write one, is never printed."""
    return re.sub(r"://[^/@]*@", "://***@", str(url))


def join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *names])


def absolute(url: str) -> str:
    """A local path made absolute; a URL with a scheme as it is. Ray runs tasks and workers
    in folders of their own, where a path relative to the caller's names nothing."""
    return url if "://" in url else os.path.abspath(os.path.expanduser(url))


@contextlib.contextmanager
def open_atomic(url: str, block_size: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file on a unique temporary sibling of `url`, moved onto `url` once the
    block ends without error; on an error nothing is left behind."""
    with reported(url, "write"):
        fs, path = fsspec.core.url_to_fs(url)
        _make_parent(fs, path, url)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        options = {} if block_size is None else {"block_size": block_size}
        try:
            with fs.open(tmp, "wb", **options) as f:
                yield f
            fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):  # the write's own error is the one to see
                if fs.exists(tmp):
                    fs.rm(tmp)
            raise


# Protocols whose first path segment is a bucket. fsspec's makedirs creates a missing
# bucket there (s3fs does), so they get an existence check instead.
BUCKET_PROTOCOLS = frozenset({"s3", "s3a"})


def _make_parent(fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
    """Folders for local disks; object stores have none to make, but the bucket must exist."""
    if _bucketed(fs):
        check_bucket(url)
        return
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)


def check_bucket(url: str) -> None:
    """FileNotFoundError naming `url` when its bucket is absent; called before every write,
    and by a command before work whose output would have nowhere to go. One HEAD request
    (ede lists and reads back what it writes, so it needs ListBucket on its buckets
    anyway)."""
    fs, path = fsspec.core.url_to_fs(url)
    if not _bucketed(fs):
        return
    bucket = path.split("/", 1)[0]
    with reported(url, "write"):
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{shown_url(url)}: bucket {bucket!r} does not exist (ede never creates buckets)"
            ) from None


def _bucketed(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & BUCKET_PROTOCOLS)


def write_bytes_atomic(url: str, data: bytes) -> None:
    with open_atomic(url) as f:
        f.write(data)


def write_json(url: str, record: Any) -> None:
    write_bytes_atomic(url, json.dumps(record, indent=2).encode())


def read_bytes(url: str) -> bytes:
    """The object's bytes; FileNotFoundError naming the URL when it is absent."""
    with reported(url, "read"):
        try:
            with fsspec.open(url, "rb") as f:
                return f.read()
        except FileNotFoundError as exc:
            if storage_error(exc, url, "read") is not None:
                raise  # the bucket is missing: `reported` says so
            raise FileNotFoundError(f"{shown_url(url)}: no such file") from None


def read_json(url: str, *, missing_ok: bool = False) -> Any:
    """Parsed JSON; None for an absent file when `missing_ok`; one ValueError naming the
    file for anything that is not JSON (a truncated write, a stray text file)."""
    try:
        raw = read_bytes(url)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    return parse_json(url, raw)


def parse_json(url: str, raw: bytes) -> Any:
    """`raw` (read from `url`) as JSON, or one ValueError naming the file."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown_url(url)}: not valid JSON ({exc})") from None


def remove(url: str, *, recursive: bool = False) -> None:
    """Delete the object (or, `recursive`, the prefix) at `url` if there is one."""
    with reported(url, "remove"):
        fs, path = fsspec.core.url_to_fs(url)
        fs.invalidate_cache()
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


# ----------------------------------------------------------------------------- failures

# Which failures are the operator's to fix, by the name of botocore's exception type
# (ede.storage imports no boto) or the S3 error code in its response. Only botocore's
# names: a refused connection elsewhere (a Ray address) is not a storage failure.
NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"}
DENIED_CODES = {
    "403",
    "AccessDenied",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
    "AccountProblem",
}
BUCKET_MISSING_CODES = {"NoSuchBucket"}
# pyarrow's native S3 filesystem (`ede score`'s and ingest's reads) raises a plain OSError
# whose message carries the AWS SDK's error code: "... AWS Error ACCESS_DENIED during
# HeadObject operation: ...". Its codes, mapped to the same causes as botocore's.
ARROW_S3_ERROR = re.compile(r"AWS Error ([A-Z_]+) during")
_DENIED = (PermissionError, "access denied")
ARROW_CAUSES: dict[str, tuple[type[OSError], str]] = {
    "NETWORK_CONNECTION": (ConnectionError, "endpoint unreachable"),
    "ACCESS_DENIED": _DENIED,
    "INVALID_ACCESS_KEY_ID": _DENIED,
    "SIGNATURE_DOES_NOT_MATCH": _DENIED,
    "EXPIRED_TOKEN": _DENIED,
    "INVALID_CLIENT_TOKEN_ID": _DENIED,
    "MISSING_AUTHENTICATION_TOKEN": _DENIED,
    "NO_SUCH_BUCKET": (FileNotFoundError, "bucket missing"),
}
ARROW_TRANSIENT = {
    "NETWORK_CONNECTION",
    "SLOW_DOWN",
    "THROTTLING",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "REQUEST_TIMEOUT",
}


def storage_error(exc: BaseException, url: str | None, operation: str) -> OSError | None:
    """`exc` as one line, `<url>: cannot <operation>: <cause> (<detail>)`, for the four
    failures an operator fixes; None for anything else (a missing object, a bug), which
    keeps its own type and message. The type says the kind: FileNotFoundError (bucket
    missing), PermissionError (access denied, no credentials), ConnectionError
    (endpoint unreachable), so callers that catch those keep working."""
    for err in error_chain(exc):
        found = _cause(err)
        if found is not None:
            kind, cause = found
            where = f"{shown_url(url)}: " if url else ""
            return kind(f"{where}cannot {operation}: {cause} ({shown_url(first_line(err))})")
    return None


@contextlib.contextmanager
def reported(url: str, operation: str) -> Iterator[None]:
    """Raise `storage_error`'s one line instead of a backend's failure inside the block."""
    try:
        yield
    except Exception as exc:
        one_line = storage_error(exc, url, operation)
        if one_line is None:
            raise
        raise one_line from None


def _cause(err: BaseException) -> tuple[type[OSError], str] | None:
    name = type(err).__name__
    response = getattr(err, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = str(error.get("Code", "")) if isinstance(error, dict) else ""
    arrow = _arrow_code(err)
    if arrow in ARROW_CAUSES:
        return ARROW_CAUSES[arrow]
    if name in NO_CREDENTIALS:
        return PermissionError, "no credentials (set AWS_* variables, a profile or a role)"
    if name in UNREACHABLE:
        return ConnectionError, "endpoint unreachable"
    if code in DENIED_CODES:
        return _DENIED
    if code in BUCKET_MISSING_CODES:
        return FileNotFoundError, "bucket missing"
    return None


# Throttling and server-side hiccups: the same request is expected to succeed later.
TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "500",
    "502",
    "503",
    "504",
}
TRANSIENT_TYPES = (ConnectionError, TimeoutError)  # incl. `storage_error`'s unreachable


def transient(exc: BaseException) -> bool:
    """Whether retrying the same storage operation may succeed: a dropped or refused
    connection, a timeout, throttling or a 5xx from the store. Everything else fails the
    same way every time (bad input, a missing object, access denied, a bug: a ValueError,
    a SyntaxError), so it is not retried."""
    for err in error_chain(exc):
        if isinstance(err, TRANSIENT_TYPES):
            return True
        response = getattr(err, "response", None)
        error = response.get("Error") if isinstance(response, dict) else None
        if isinstance(error, dict) and str(error.get("Code", "")) in TRANSIENT_CODES:
            return True
        if type(err).__name__ in UNREACHABLE | {"ReadTimeoutError", "ServerDisconnectedError"}:
            return True
        if _arrow_code(err) in ARROW_TRANSIENT:
            return True
    return False


def _arrow_code(err: BaseException) -> str | None:
    """The AWS SDK's error code in a pyarrow S3 OSError's message; None for anything else."""
    if type(err) is not OSError:  # pyarrow raises plain OSError; subclasses are Python's
        return None
    found = ARROW_S3_ERROR.search(str(err))
    return found.group(1) if found else None


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what raised it, up to an error raised `from None` (one line already)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def first_line(err: BaseException) -> str:
    """An error's first line (its type's name when it has no message): the detail a
    one-line message carries."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
