"""The scoring pipeline: a reader thread, the scorer, a writer thread, bounded queues.

pyarrow decodes and onnxruntime scores without the GIL, so the three stages
overlap on separate cores; queues of two batches bound the memory. Outputs are
written to a temporary name and moved into place once complete (the ledger, the
prefix's record, told before and after each move); on an error the items already
queued still commit (complete files only), the partial one is deleted, and the error
is raised in the caller's thread. Another run's temporaries are removed only once
stale (`is_stale_tmp`), so concurrent runs into one prefix never delete each other's.
"""

from __future__ import annotations

import contextlib
import datetime
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.dataset as ds

from ede.data.parquet_encoding import parquet_writer
from ede.export.artifact import infer
from ede.scoring.drift import ScoreDrift
from ede.scoring.inputs import Spec, model_input
from ede.storage import first_line, storage_error

TMP_PREFIX = "_ede-tmp-"
# A temporary not modified for this long is a dead run's leftover. Locally the file's
# mtime advances with every batch written (a row group at a time, seconds apart at most);
# on S3 a multipart upload is invisible until it completes, so an `_ede-tmp-` object only
# exists between its close and the end of its move (copy + delete: seconds). Ten minutes
# is far above both, and above the clock skew between this host and the store's
# LastModified, so a live run's temporary is never taken for a leftover.
STALE_TMP_S = 600.0
_DONE, _ABORT = object(), object()  # queue sentinels
Progress = Callable[[int, int, bool], None]  # (file index, rows written in it, committed)


@dataclass(frozen=True)
class Job:
    source: str  # path within the input filesystem
    shown: str  # URL for messages
    fmt: str
    output: str  # final path within the output filesystem
    passthrough: list[str]
    schema: pa.Schema  # of the output
    rows: int | None  # None: CSV, unknown until read


class Ledger(Protocol):
    """Told around each commit (ede.scoring.record.Record): before the move, after it."""

    def before_commit(self, name: str) -> None: ...

    def after_commit(self, name: str, source: str, rows: int) -> None: ...


def modified(info: dict[str, Any]) -> float | None:
    """An fsspec `info()`'s modification time, epoch seconds: local `mtime`, s3fs
    `LastModified`; None when the store gives neither."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def is_stale_tmp(info: dict[str, Any], now: float) -> bool:
    """The one rule for removing another run's temporary: an `_ede-tmp-` entry not
    modified for `STALE_TMP_S`; one whose age is unknown is never removed."""
    name = info["name"].rstrip("/").rsplit("/", 1)[-1]
    when = modified(info)
    return name.startswith(TMP_PREFIX) and when is not None and now - when > STALE_TMP_S


def remove_stale_tmps(fs, entries: list[dict[str, Any]]) -> int:
    """Remove the stale temporaries among a listing of the output prefix (`ls(detail=True)`;
    temporaries are only ever made there); a live run's are left alone. Returns how many."""
    now, removed = time.time(), 0
    for info in entries:
        if is_stale_tmp(info, now):
            with contextlib.suppress(FileNotFoundError):  # another run removed it first
                fs.rm(info["name"])
                removed += 1
    return removed


def _put(q: queue.Queue, item, alive: Callable[[], bool]) -> bool:
    while alive():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Reader(threading.Thread):
    """Decodes and converts batches ahead of the scorer; errors travel down the queue."""

    def __init__(self, afs, jobs: list[Job], spec: Spec, batch_size: int, q: queue.Queue):
        super().__init__(daemon=True, name="ede-score-reader")
        self.afs, self.jobs, self.spec, self.batch_size, self.q = afs, jobs, spec, batch_size, q
        self.stop = threading.Event()

    def _alive(self) -> bool:
        return not self.stop.is_set()

    def run(self) -> None:
        try:
            for i, job in enumerate(self.jobs):
                done = 0
                columns = self.spec.inputs + [
                    c for c in job.passthrough if c not in self.spec.inputs
                ]
                read = record_batches(
                    self.afs, job.source, job.shown, job.fmt, columns, self.batch_size
                )
                for batch in read:
                    if batch.num_rows:
                        X = model_input(batch, self.spec, job.shown, done)
                        if not _put(self.q, (i, batch, X), self._alive):
                            return
                        done += batch.num_rows
                if done == 0:
                    raise ValueError(f"{job.shown}: table is empty (0 rows)")
                if not _put(self.q, (i, None, None), self._alive):
                    return
            _put(self.q, _DONE, self._alive)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            _put(self.q, exc, self._alive)


def record_batches(
    afs, source: str, shown: str, fmt: str, columns: list[str], batch_size: int
) -> Iterator[pa.RecordBatch]:
    """`columns` of one table in batches of at most `batch_size` rows; a read error is one
    ValueError naming the file. Parquet one row group at a time: pyarrow pre-buffers
    (coalesces) the reads of what one scan covers, which on S3 is ~10x faster than a
    request per column chunk, but a whole-file scan then holds the whole file (peak RSS
    grew with file size)."""
    try:
        dataset = ds.dataset(source, format=fmt, filesystem=afs)
        if fmt != "parquet":
            yield from dataset.to_batches(columns=columns, batch_size=batch_size)
            return
        for fragment in dataset.get_fragments():
            for part in fragment.split_by_row_group():
                yield from part.to_batches(columns=columns, batch_size=batch_size)
    except pa.ArrowException as exc:
        raise ValueError(f"{shown}: cannot read as {fmt}: {first_line(exc)}") from None
    except OSError as exc:  # pyarrow's S3 mid-read: denied, unreachable
        failed = storage_error(exc, shown, "read")
        if failed is None:
            raise
        raise failed from None


class _Writer(threading.Thread):
    """Writes each job's batches to a temporary name and moves it into place when complete."""

    def __init__(
        self,
        fs,
        jobs: list[Job],
        q: queue.Queue,
        progress: Progress | None,
        ledger: Ledger | None = None,
    ):
        super().__init__(daemon=True, name="ede-score-writer")
        self.fs, self.jobs, self.q, self.progress = fs, jobs, q, progress
        self.ledger = ledger
        self.error: BaseException | None = None
        self.committed = 0
        self.made_dir: str | None = None  # removed again if nothing was committed to it

    def run(self) -> None:
        current = None  # (index, tmp path, stream, writer, rows)
        try:
            while True:
                item = self.q.get()
                if item is _DONE or item is _ABORT:
                    return
                i, out = item
                if current is None:
                    tmp = self._tmp(self.jobs[i])
                    self._make_parent(tmp)
                    stream = self.fs.open(tmp, "wb")
                    current = [i, tmp, stream, parquet_writer(stream, self.jobs[i].schema), 0]
                if out is not None:
                    current[3].write_batch(out)
                    current[4] += out.num_rows
                    if self.progress:
                        self.progress(i, current[4], False)
                    continue
                _, tmp, stream, writer, rows = current
                writer.close()
                stream.close()
                job = self.jobs[i]
                name = job.output.rsplit("/", 1)[-1]
                if self.ledger:
                    self.ledger.before_commit(name)
                self.fs.mv(tmp, job.output)
                current = None
                self.committed += 1
                if self.ledger:
                    self.ledger.after_commit(name, job.shown, rows)
                if self.progress:
                    self.progress(i, rows, True)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            if current is not None:
                self._discard(current)
            if self.made_dir and not self.committed:
                try:
                    self.fs.rmdir(self.made_dir)
                except OSError:
                    pass

    def _make_parent(self, path: str) -> None:
        """Local disks need the folder; object stores have none to make."""
        parent = path.rsplit("/", 1)[0]
        if "file" in self.fs.protocol and not self.fs.exists(parent):
            self.fs.makedirs(parent, exist_ok=True)
            self.made_dir = parent

    def _tmp(self, job: Job) -> str:
        folder, name = job.output.rsplit("/", 1)
        return f"{folder}/{TMP_PREFIX}{name.rsplit('.', 1)[0]}.{uuid.uuid4().hex}"

    def _discard(self, current: list) -> None:
        _, tmp, stream, writer, _ = current
        for step in (writer.close, stream.close, lambda: self.fs.rm(tmp)):
            try:
                step()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


def run_jobs(
    afs_in,
    fs_out,
    jobs: list[Job],
    sess,
    spec: Spec,
    batch_size: int,
    progress,
    ledger: Ledger | None = None,
    drift: ScoreDrift | None = None,
) -> tuple[int, int]:
    """(rows, anomalies) scored; raises the first error after the writer is settled.
    `drift` counts every batch's scores over the model's reference bins, per output."""
    q_in: queue.Queue = queue.Queue(maxsize=2)
    q_out: queue.Queue = queue.Queue(maxsize=2)
    reader = _Reader(afs_in, jobs, spec, batch_size, q_in)
    writer = _Writer(fs_out, jobs, q_out, progress, ledger)
    reader.start()
    writer.start()
    rows = anomalies = 0
    try:
        while True:
            item = _get(q_in, writer)
            if isinstance(item, BaseException):
                raise item
            if item is _DONE:
                break
            i, batch, X = item
            out = None
            if batch is not None:
                score, flag = infer(sess, X)
                if drift is not None:
                    job = jobs[i]
                    drift.add(score, flag, job.output.rsplit("/", 1)[-1], job.shown)
                cols = [batch.column(c) for c in jobs[i].passthrough]
                cols += [pa.array(score), pa.array(flag)]
                out = pa.RecordBatch.from_arrays(cols, schema=jobs[i].schema)
                rows, anomalies = rows + len(score), anomalies + int(flag.sum())
            if not _put(q_out, (i, out), writer.is_alive):
                break
        _put(q_out, _DONE, writer.is_alive)
        writer.join()
    except BaseException:
        reader.stop.set()
        _put(q_out, _ABORT, writer.is_alive)  # what is queued before it still commits
        writer.join()
        raise
    finally:
        reader.stop.set()
    if writer.error is not None:
        raise writer.error
    return rows, anomalies


def _get(q: queue.Queue, writer: _Writer):
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if not writer.is_alive():
                raise writer.error or RuntimeError("the output writer stopped") from None
