"""Batch scoring: tables in object storage, through the exported graph, one Parquet out per input.

Why it is built this way:

- Trust the model first: model.onnx's sha256 is checked against metadata.json
  before any data is touched.
- Fail before writing: every input's schema is checked from its footer (or CSV
  header) before the first output is written: feature columns matched by name,
  order free; missing ones named; numeric types; row count; image list size.
  Values (NaN, inf, missing) can only be seen while streaming: one stops the
  run, the file at fault is not committed; files read completely before it are
  committed (they are correct) and a rerun after the fix skips them.
- Bounded memory: each file streams as pyarrow record batches of `batch_size`
  rows, through queues of two batches; never a whole file in memory. Parquet is
  scanned one row group at a time, so memory follows row-group size.
- Overlap: a reader thread decodes and converts the next batch (pyarrow releases
  the GIL), onnxruntime scores this one (so does it), a writer thread encodes and
  uploads the previous one.
- Restartable: each output goes to `<output>/_ede-tmp-<name>.<random>` and is moved
  to `<output>/<input stem>.parquet` once complete; an existing output the record
  lists is skipped unless `overwrite` (an unlisted one is scored again: it may have
  been moved into place just before a crash or an outage stopped its entry), so
  rerunning after a crash finishes the job. Readers
  (pyarrow, Spark) ignore names starting with `_`. A run removes only stale
  temporaries (`ede.scoring.pipeline.is_stale_tmp`: untouched for `STALE_TMP_S`),
  whatever their stem (temporaries only ever lie directly in the prefix), so a
  crashed run's leftovers go at the first rerun after that delay, and concurrent
  runs into one prefix never delete each other's.
- Recorded, one model per prefix: `<output>/_ede-scored.json` names the model
  (URL, graph sha256, variant) and, per output, its input, rows and model
  (`ede.scoring.record`), updated by compare-and-swap so concurrent scorers keep
  each other's entries. A prefix scored with another model is refused before
  anything is written, unless `overwrite`.
- Drift: every batch's scores are counted over the deciles of the model's validation
  scores (metadata.json's `reference`), and the summary carries their PSI against
  them, per output file and overall, with score quantiles and the share above the
  threshold (`ede.scoring.drift`): how far this data moved from what the model was
  calibrated on. A run that scored rows appends it to `<output>/_ede-drift.json`, the
  prefix's last runs (`ede.scoring.history`), by way of its record: the entry is
  written with the last output's record entry, so a failure after that loses nothing.
- Pass-through: by default every input column the model does not use (ids,
  timestamps, the label) is copied beside `score` and `is_anomaly`, so an output
  row stands alone; `id_columns` picks them explicitly and the rest is ignored.

Inputs on S3 or local disk are read with pyarrow's native filesystems (faster
than through fsspec), other protocols through fsspec; outputs go through fsspec
(pyarrow's S3 leaves directory-marker objects behind when it moves a file).
Credentials come from the standard AWS chain, never from here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs

from ede.data.listing import arrow_fs, list_files, shown_path
from ede.export.artifact import read_model, session
from ede.scoring import history as drift_history
from ede.scoring.drift import ScoreDrift
from ede.scoring.inputs import Spec, check_schema, inspect
from ede.scoring.pipeline import Job, Progress, remove_stale_tmps, run_jobs
from ede.scoring.record import RECORD_FILE, Record, model_entry
from ede.storage import shown_url

FORMATS = {".parquet": "parquet", ".csv": "csv"}
DEFAULT_BATCH_SIZE = 65536  # rows per record batch read, and per row group written


@dataclass(frozen=True)
class Summary:
    files: int
    skipped: int
    rows: int
    anomalies: int
    seconds: float
    drift: dict | None = None  # ede.scoring.drift.ScoreDrift.summary(); None: no reference
    history: list | None = None  # the prefix's last runs, this one last (ede.scoring.history)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        share = f" ({100 * self.anomalies / self.rows:.2f}%)" if self.rows else ""
        skipped = (
            f"; skipped {self.skipped} existing output(s), --overwrite to redo"
            if self.skipped
            else ""
        )
        drift = f"; {drift_phrase(self.drift)}" if self.drift and self.drift["rows"] else ""
        return (
            f"scored {self.files} file(s), {self.rows:,} rows, {self.anomalies:,} anomalies"
            f"{share} in {self.seconds:.2f} s: {self.rows_per_second:,.0f} rows/s"
            f"{drift}{skipped}"
        )


def drift_phrase(drift: dict) -> str:
    """A run's drift in a few words: PSI against the threshold, median score, share above
    the model's threshold, and the most drifted file when there are several."""
    above = drift.get("above_threshold")
    median = (drift.get("quantiles") or {}).get("p50")
    parts = [f"score drift PSI {drift['value']:.3f} (retrain above {drift['threshold']:g})"]
    if median is not None:
        parts.append(f"median score {median:.4g}")
    if above is not None:
        parts.append(f"{100 * above:.2f}% above threshold")
    files = drift.get("files") or {}
    if len(files) > 1:
        name, worst = max(files.items(), key=lambda item: item[1]["psi"])
        parts.append(f"most drifted {name} PSI {worst['psi']:.3f} of {len(files)} files")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- inputs


def list_inputs(url: str) -> tuple[pafs.FileSystem, list[tuple[str, str]]]:
    """The tables `url` names (`ede.data.listing`'s rule) -> [(path, URL shown)], sorted."""
    afs, _, _ = arrow_fs(url)
    fs, paths = list_files(url, tuple(FORMATS))
    return afs, [(p, shown_path(fs, p)) for p in paths]


def table_format(path: str) -> str:
    """pyarrow's format for a path: by its suffix, else Parquet (what ede itself writes)."""
    for suffix, fmt in FORMATS.items():
        if path.lower().endswith(suffix):
            return fmt
    return "parquet"


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


# ----------------------------------------------------------------------------- plan


def plan(
    afs_in: pafs.FileSystem,
    inputs: list[tuple[str, str]],
    output: str,
    spec: Spec,
    *,
    id_columns: list[str] | None,
    overwrite: bool,
    notes: list[str],
    model: dict | None = None,
) -> tuple[fsspec.AbstractFileSystem, list[Job], int, Record | None]:
    """Check every input, and the prefix's record against `model` (`model_entry`), and
    decide each output before anything is written; then remove stale temporaries."""
    fs_out, out_dir = fsspec.core.url_to_fs(output)
    out_dir = out_dir.rstrip("/")
    fs_out.invalidate_cache()
    if fs_out.isfile(out_dir):
        raise ValueError(f"{shown_url(output)}: is a file; --output names a folder or prefix")
    try:
        listing = fs_out.ls(out_dir, detail=True)
    except FileNotFoundError:
        listing = []
    existing = {info["name"].rstrip("/").rsplit("/", 1)[-1] for info in listing}
    record, listed = None, None
    if model is not None:
        record_url = fs_out.unstrip_protocol(f"{out_dir}/{RECORD_FILE}")
        record = Record(output, record_url, model, overwrite)
        current = record.check()  # another model's prefix: refused before any input is opened
        listed = set((current or {}).get("files", {}))
    jobs, skipped, seen, unused = [], 0, {}, set()
    sources = {shown for _, shown in inputs}
    for path, shown in inputs:
        fmt = table_format(path)
        schema, rows = inspect(afs_in, path, shown, fmt)
        passthrough = check_schema(schema, spec, shown, id_columns)
        unused.update(n for n in schema.names if n not in spec.inputs)
        name = f"{_stem(path)}.parquet"
        if name in seen:
            raise ValueError(f"{shown} and {seen[name]} would both write {name}; score them apart")
        seen[name] = shown
        target = f"{out_dir}/{name}"
        if shown_url(fs_out.unstrip_protocol(target)) in sources:
            raise ValueError(f"{shown}: output {name} would overwrite this input")
        # With a record, only what it lists is done: an output moved into place whose
        # entry was never written (a crash or an outage in between) is scored again.
        if name in existing and not overwrite and (listed is None or name in listed):
            skipped += 1
            continue
        fields = [schema.field(c) for c in passthrough]
        fields += [pa.field("score", pa.float32()), pa.field("is_anomaly", pa.bool_())]
        out_schema = pa.schema(fields)
        jobs.append(Job(path, shown, fmt, target, passthrough, out_schema, rows))
    if unused:
        fate = "passed through" if id_columns is None else "ignored"
        shown_cols = sorted(unused - set(id_columns or []))
        if shown_cols:
            notes.append(f"column(s) not used by the model, {fate}: {shown_cols}")
    remove_stale_tmps(fs_out, listing)  # dead runs' leftovers; live runs' stay
    return fs_out, jobs, skipped, record


class _DriftWithLastFile:
    """The record, told of each commit; the last one carries the run's history entry, so
    that a run is done and its drift is due in one write (`ede.scoring.record`)."""

    def __init__(self, record: Record, files: int, drift: ScoreDrift | None, model, input: str):
        self.record, self.left, self.drift = record, files, drift
        self.model, self.input = model, input

    def before_commit(self, name: str) -> None:
        self.record.before_commit(name)

    def after_commit(self, name: str, source: str, rows: int) -> None:
        self.left -= 1
        entry = None
        if self.left == 0 and self.drift is not None:  # every batch is counted by now
            summary = self.drift.summary()
            if summary["rows"]:
                entry = drift_history.entry(summary, self.model, self.input)
        self.record.after_commit(name, source, rows, drift=entry)


def settle_drift(output: str, record: Record) -> list | None:
    """Move the finished runs' entries from the record to the history; the history then,
    or None when there was nothing to move."""
    pending = record.pending_drift()
    if not pending:
        return None
    runs = drift_history.append(output, *pending)
    record.drift_settled([e["id"] for e in pending])
    return runs


class TerminalProgress:
    """A one-line progress display, redrawn at most every half second."""

    def __init__(self, jobs: list[Job], stream=sys.stderr):
        self.total = sum(j.rows or 0 for j in jobs) if all(j.rows for j in jobs) else None
        self.files, self.stream, self.start = len(jobs), stream, time.perf_counter()
        self.done_rows, self.done_files, self.last, self.current = 0, 0, 0.0, 0

    def __call__(self, index: int, rows: int, committed: bool) -> None:
        if committed:
            self.done_rows += rows
            self.done_files += 1
            self.current = 0
        else:
            self.current = rows
        now = time.perf_counter()
        if now - self.last < 0.5 and self.done_files < self.files:
            return
        self.last = now
        seen = self.done_rows + self.current
        total = f"/{self.total:,} rows ({100 * seen / self.total:.0f}%)" if self.total else " rows"
        rate = seen / max(now - self.start, 1e-9)
        print(
            f"\r{self.done_files}/{self.files} files, {seen:,}{total}, {rate:,.0f} rows/s",
            end="\n" if self.done_files == self.files else "",
            file=self.stream,
            flush=True,
        )


# ----------------------------------------------------------------------------- entry point


def score(
    model: str,
    input: str,
    output: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int = 1,
    overwrite: bool = False,
    id_columns: list[str] | None = None,
    variant: str = "fp32",
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> Summary:
    """Score every table under `input` into `output` (see the module docstring; the
    record's rules, `overwrite` included, in `ede.scoring.record`)."""
    start = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    graph, meta = read_model(model, variant)  # sha256 checked before anything else
    spec = Spec(list(meta["feature_names"]), tuple(meta["input_shape"]))
    sess = session(graph, threads)
    afs_in, inputs = list_inputs(input)
    notes: list[str] = []
    fs_out, jobs, skipped, record = plan(
        afs_in,
        inputs,
        output,
        spec,
        id_columns=id_columns,
        overwrite=overwrite,
        notes=notes,
        model=(named := model_entry(model, meta, variant)),
    )
    if progress is None and sys.stderr.isatty() and jobs:
        progress = TerminalProgress(jobs)
    drift = ScoreDrift.for_edges(meta.get("reference", {}).get("score_edges", []))
    ledger = _DriftWithLastFile(record, len(jobs), drift, named, input)
    rows, anomalies = run_jobs(
        afs_in, fs_out, jobs, sess, spec, batch_size, progress, ledger, drift
    )
    drifted = drift and drift.summary()
    runs = settle_drift(output, record)  # this run's entry, and any a failed run left
    for line in notes:  # after the run: a failed run says one line, its error
        (warn or (lambda text: print(f"ede score: note: {text}", file=sys.stderr)))(line)
    seconds = time.perf_counter() - start
    return Summary(len(jobs), skipped, rows, anomalies, seconds, drifted, runs)
