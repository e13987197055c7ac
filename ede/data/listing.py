"""Which files a URL names: the one rule for ingest and scoring alike.

A URL is a file, a folder/prefix (searched recursively) or a glob. A file named
on its own is taken as it is (if its format is known); inside folders and globs
only files of a known format count, and names starting with `_` or `.` are
skipped: they are temporaries, markers and hidden files of writers such as
`ede score`, Spark or pyarrow, never data.
"""

from __future__ import annotations

import fsspec
import pyarrow.fs as pafs

from ede.storage import check_bucket, reported, shown_url


def list_files(url: str, suffixes: tuple[str, ...]) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """(filesystem, sorted paths in it) of the files `url` names; one error naming it
    (`ede.storage.storage_error`'s line for a store that refuses or cannot be reached)."""
    with reported(url, "read"):
        return _list_files(url, suffixes)


def _list_files(url: str, suffixes: tuple[str, ...]) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    if any(ch in path for ch in "*?["):
        paths = fs.glob(path)
    elif fs.isdir(path):
        paths = fs.find(path)
    elif fs.isfile(path):
        if not path.lower().endswith(suffixes):
            raise ValueError(f"{shown_url(url)}: not a {' or '.join(suffixes)} file")
        return fs, [path]
    else:
        check_bucket(url)  # on an object store, a missing bucket says so
        raise FileNotFoundError(f"{shown_url(url)}: no such file, folder or prefix")
    keep = sorted(p for p in paths if p.lower().endswith(suffixes) and _is_data(p))
    if not keep:
        raise FileNotFoundError(f"{shown_url(url)}: no {' or '.join(suffixes)} files there")
    return fs, keep


def _is_data(path: str) -> bool:
    return not path.rstrip("/").rsplit("/", 1)[-1].startswith(("_", "."))


def shown_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path of `fs` as the URL messages show."""
    return shown_url(fs.unstrip_protocol(path))


def arrow_fs(url: str) -> tuple[pafs.FileSystem, str, fsspec.AbstractFileSystem]:
    """(pyarrow filesystem, path in it, fsspec filesystem) for one URL: pyarrow's native
    S3 and local filesystems read Parquet faster than through fsspec."""
    fs, path = fsspec.core.url_to_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return pafs.LocalFileSystem(), path, fs
    if "s3" in protocols or "s3a" in protocols:
        return pafs.FileSystem.from_uri(f"s3://{path.split('/', 1)[0]}")[0], path, fs
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path, fs
