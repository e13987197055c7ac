"""Compare-and-swap of one small object: replace it only if it is still what was read.

A pointer that several unattended runs may move (the champion of a model name, the
record of which model scored an output prefix) must not be moved on a stale view:
two retrains started minutes apart both read "no champion yet", and whichever
finished last would win, better or worse. So a writer reads the object with a
token, decides, and writes only if the token still holds; otherwise `Conflict`, and
it decides again on what is there now.

- S3 (and MinIO): the store's conditional writes, `If-Match: <ETag>` to replace and
  `If-None-Match: *` to create; atomic on the server, whatever the number of writers.
- Local disks: a lock file made with O_CREAT | O_EXCL beside the object, held for the
  read-compare-rename only; a lock older than `LOCK_STALE_S` is a crashed holder's
  and is broken. The token is the content's sha256.
- Other fsspec stores: the same compare without a lock (best effort, stated here).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fsspec

from ede.storage import (
    BUCKET_PROTOCOLS,
    check_bucket,
    error_chain,
    reported,
    shown_url,
    write_bytes_atomic,
)

LOCK_STALE_S = 30.0  # a holder does one small read and one rename: far less than this
LOCK_WAIT_S = 10.0
UPDATE_ATTEMPTS = 10  # conflicts only while another writer commits: a few suffice


class Conflict(Exception):
    """The object changed since it was read: read it again and decide again."""


@dataclass(frozen=True)
class Versioned:
    data: bytes | None  # None: there is no object
    token: str | None  # what `write_if` must find to replace it; None: absent


def read_versioned(url: str) -> Versioned:
    fs, path = fsspec.core.url_to_fs(url)
    with reported(url, "read"):
        if _on_s3(fs):
            return _read_s3(fs, path)
        fs.invalidate_cache()
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            return Versioned(None, None)
        return Versioned(data, _digest(data))


def write_if(url: str, data: bytes, token: str | None) -> None:
    """Write `data` at `url` if the object is still the one `token` names (None: absent);
    else raise `Conflict`. Never creates a bucket."""
    fs, path = fsspec.core.url_to_fs(url)
    check_bucket(url)
    with reported(url, "write"):
        if _on_s3(fs):
            return _write_s3(fs, path, data, token, url)
        if "file" in _protocols(fs):
            with _lock(path, url):
                return _compare_and_write(url, data, token)
        return _compare_and_write(url, data, token)


def update(url: str, change: Callable[[bytes | None], bytes | None]) -> None:
    """Read-change-write `url` until no other writer came in between: `change` gets the
    bytes there now (None: absent) and returns the new bytes, or None for no write. A
    conflict re-reads and re-applies `change`, so no writer loses another's update."""
    for attempt in range(UPDATE_ATTEMPTS):
        current = read_versioned(url)
        new = change(current.data)
        if new is None:
            return
        try:
            write_if(url, new, current.token)
            return
        except Conflict:
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # desynchronise the writers
    raise Conflict(f"{shown_url(url)}: still changing after {UPDATE_ATTEMPTS} attempts")


def _compare_and_write(url: str, data: bytes, token: str | None) -> None:
    if read_versioned(url).token != token:
        raise Conflict(f"{shown_url(url)} changed since it was read")
    write_bytes_atomic(url, data)


# ----------------------------------------------------------------------------- S3


def _read_s3(fs, path: str) -> Versioned:
    """ETag before and after the read: equal, the bytes are that version's."""
    for _ in range(5):
        fs.invalidate_cache(path)
        try:
            before = fs.info(path)["ETag"]
            data = fs.cat_file(path)
            fs.invalidate_cache(path)
            after = fs.info(path)["ETag"]
        except FileNotFoundError:
            return Versioned(None, None)
        if before == after:
            return Versioned(data, before)
    raise Conflict(f"s3://{path} keeps changing while it is read")


def _write_s3(fs, path: str, data: bytes, token: str | None, url: str) -> None:
    condition = {"mode": "create"} if token is None else {"IfMatch": token}
    try:
        fs.pipe_file(path, data, **condition)
    except OSError as exc:
        if _refused_condition(exc):
            raise Conflict(f"{shown_url(url)} changed since it was read") from None
        raise
    finally:
        fs.invalidate_cache(path)


# 412: the condition did not hold; 409: another conditional write to the key was in flight;
# 404 NoSuchKey: If-Match on an object deleted since
REFUSED_CONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}


def _refused_condition(exc: BaseException) -> bool:
    """s3fs turns the server's refusal into a bare OSError; botocore's error, which names
    the code, is what it was raised from."""
    return any(
        str(((getattr(err, "response", None) or {}).get("Error") or {}).get("Code", ""))
        in REFUSED_CONDITION_CODES
        for err in error_chain(exc)
    )


# ----------------------------------------------------------------------------- local


@contextlib.contextmanager
def _lock(path: str, url: str) -> Iterator[None]:
    lock = f"{path}.lock"
    os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.stat(lock).st_mtime > LOCK_STALE_S:
                    os.unlink(lock)  # its holder died holding it
                    continue
            if time.monotonic() > deadline:
                raise Conflict(f"{shown_url(url)}: locked by another writer ({lock})") from None
            time.sleep(0.02)
    try:
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _protocols(fs) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _on_s3(fs) -> bool:
    return bool(_protocols(fs) & BUCKET_PROTOCOLS)
