"""The one gateway to object storage: bytes and JSON to and from any fsspec URL.

Every layer reads and writes through here, so three rules have one owner: writes
are atomic (a unique temporary sibling, then a move: a crash never leaves a
half-written object, and two writers never touch each other's temporaries), a URL
in a message never shows credentials, and a missing or unreadable JSON file is one
error naming the file. The core (the estimator's save/load) reaches storage only
through this module, never through fsspec itself.
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
    fs, path = fsspec.core.url_to_fs(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    options = {} if block_size is None else {"block_size": block_size}
    try:
        with fs.open(tmp, "wb", **options) as f:
            yield f
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_bytes_atomic(url: str, data: bytes) -> None:
    with open_atomic(url) as f:
        f.write(data)


def write_json(url: str, record: Any) -> None:
    write_bytes_atomic(url, json.dumps(record, indent=2).encode())


def read_bytes(url: str) -> bytes:
    """The object's bytes; FileNotFoundError naming the URL when it is absent."""
    try:
        with fsspec.open(url, "rb") as f:
            return f.read()
    except FileNotFoundError:
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
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown_url(url)}: not valid JSON ({exc})") from None


def remove(url: str, *, recursive: bool = False) -> None:
    """Delete the object (or, `recursive`, the prefix) at `url` if there is one."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    if fs.exists(path):
        fs.rm(path, recursive=recursive)
