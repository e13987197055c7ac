"""Checked record batches from a user's tables: one file at a time, one bounded batch at a time.

Parquet and CSV stream in record batches of at most BATCH_BYTES of features, read
synchronously: Parquet through `pyarrow.parquet.ParquetFile.iter_batches`, one row
group at a time (fetched whole when it is at most PREBUFFER_BYTES compressed, else
through buffered streams, so a file written as one huge row group still streams in
bounded memory), CSV through pyarrow's streaming CSV reader (block by block). Not
`pyarrow.dataset`'s scanner: it reads ahead of a slow consumer without bound
(measured: 77 MB of batches buffered on a 4M-row table while ingest was busy
writing). npz, which cannot stream, is loaded whole and handed on in batches.

Every batch is checked before anything uses it, so a bad file fails the same way
whatever its format and however deep in the file the bad value lies: one ValueError
naming the file, the column and the value (numeric features, a 0/1 label by
`ede.core.checks.check_labels`, no NaN or inf).

Features come out as float32 (n, d) arrays in the file's column order and labels
as int64, the values a model sees, so the same rows give the same arrays (hence
the same fingerprint) from CSV and from Parquet.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ede.core.checks import check_labels
from ede.data.columns import (
    check_feature_types,
    column_floats,
    feature_columns,
    is_feature_type,
    label_present,
    schema_types,
)
from ede.data.late_labels import LateLabels, label_column_needed
from ede.data.listing import arrow_fs, list_files
from ede.data.tables import SUFFIXES
from ede.data.window import DataWindow
from ede.storage import first_line, read_bytes, shown_url, storage_error

BATCH_BYTES = 4 << 20  # float32 features per batch (CSV: bytes of text per block)
STREAM_BYTES = 4 << 20  # Parquet: read buffers of all columns together (64 KiB or more each)
# Row groups up to this size (compressed) are fetched whole, in a few coalesced reads (one
# object-store request instead of hundreds); larger ones stream through the buffers above.
PREBUFFER_BYTES = 64 << 20


@dataclass(frozen=True)
class Source:
    """One input file: where it is, its feature columns, whether it has the label column."""

    url: str
    feature_names: tuple[str, ...]
    label: str | None  # the label column's name in the file; None: absent
    rows: int | None  # from the footer (Parquet, npz); None until read (CSV)
    late: LateLabels | None = None  # labels joined by id (`ede.data.late_labels`)

    @property
    def suffix(self) -> str:
        return next(s for s in SUFFIXES if self.url.split("?", 1)[0].lower().endswith(s))


def list_sources(
    url: str,
    label_column: str,
    window: DataWindow | None = None,
    late: LateLabels | None = None,
) -> list[Source]:
    """The files `url` names (`ede.data.listing`'s rule), inside `window`'s dated partitions
    if one is given, each inspected; one schema for all. `late`: labels joined by id."""
    fs, paths = list_files(url, SUFFIXES)
    if window is not None:
        paths, _ = window.select(paths, shown_url(url))
    sources = [inspect_source(fs.unstrip_protocol(p), label_column, late) for p in paths]
    first = sources[0]
    for s in sources[1:]:
        if s.feature_names != first.feature_names:
            raise ValueError(
                f"{shown_url(s.url)}: columns {list(s.feature_names)} differ from "
                f"{shown_url(first.url)}'s {list(first.feature_names)}"
            )
    labelled = [s.label is not None for s in sources]
    if any(labelled) and not all(labelled):
        bare = sources[labelled.index(False)].url
        raise ValueError(f"{shown_url(bare)}: no '{label_column}' column, unlike the other files")
    return sources


def inspect_source(url: str, label_column: str | None, late: LateLabels | None = None) -> Source:
    """Schema only (a Parquet footer, a CSV's first block, an npz's arrays): numeric
    features, the label column; one error naming the file and column. With `late`
    labels, the id column is read for the join, not as a feature, and the file's own
    label column is optional."""
    where = shown_url(url)
    if late is not None and url.split("?", 1)[0].lower().endswith(".npz"):
        raise ValueError(f"{where}: late labels join by an id column; npz files have none")
    if url.split("?", 1)[0].lower().endswith(".npz"):
        X, y = _npz(url)
        names = tuple(f"f{i}" for i in range(X.shape[1]))
        has_y = label_present(["y"] if y is not None else [], label_column and "y", where)
        return Source(url, names, "y" if has_y else None, len(X))
    schema, rows = _schema(url)
    has_label = label_column_needed(late, schema.names, label_column, where)
    if late is not None and late.id_column not in schema.names:
        raise ValueError(f"{where}: no id column '{late.id_column}' to join the late labels")
    ids = [late.id_column] if late is not None else None
    names = tuple(feature_columns(schema.names, label_column if has_label else None, ids, where))
    if not names:
        raise ValueError(f"{where}: no feature columns")
    check_feature_types(schema_types(schema), names, where)
    if rows == 0:
        raise ValueError(f"{where}: table is empty (0 rows)")
    return Source(url, names, label_column if has_label else None, rows, late)


Batch = tuple[np.ndarray, "np.ndarray | None"]


def batches(source: Source, batch_rows: int | None = None) -> Iterator[Batch]:
    """(X float32 (n, d), y int64 or None) per batch, in file order, each one checked."""
    d = len(source.feature_names)
    size = batch_rows or max(1024, BATCH_BYTES // (4 * d))
    where, first = shown_url(source.url), 0
    for batch in _record_batches(source, size):
        X = np.empty((batch.num_rows, d), dtype=np.float32)
        for j, name in enumerate(source.feature_names):
            X[:, j] = column_floats(batch.column(name))
        _check_finite(X, source.feature_names, where, first)
        y = None
        if source.label is not None:
            values = batch.column(source.label).to_numpy(zero_copy_only=False)
            y = check_labels(values, f"{where}: label column '{source.label}'")
        if source.late is not None:
            ids = batch.column(source.late.id_column).to_numpy(zero_copy_only=False)
            y = source.late.apply(ids, y)
        first += len(X)
        yield X, y
    if first == 0:
        raise ValueError(f"{where}: table is empty (0 rows)")


def _record_batches(source: Source, size: int) -> Iterator[pa.RecordBatch]:
    if source.suffix == ".npz":
        X, y = _npz(source.url)
        columns = {n: X[:, j] for j, n in enumerate(source.feature_names)}
        if source.label is not None:
            columns[source.label] = y
        yield from pa.table(columns).to_batches(max_chunksize=size)
        return
    columns = list(source.feature_names) + ([source.label] if source.label else [])
    columns += [source.late.id_column] if source.late is not None else []
    try:
        if source.suffix == ".parquet":
            with _parquet(source.url, len(columns)) as pf:
                for group in range(pf.num_row_groups):  # pre-buffers one group at a time
                    yield from pf.iter_batches(size, row_groups=[group], columns=columns)
            return
        with _csv(source.url) as reader:
            for batch in reader:
                yield batch.select(columns)
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown_url(source.url)}: no such file") from None
    except (pa.ArrowInvalid, OSError) as exc:
        failed = storage_error(exc, source.url, "read")  # pyarrow's S3: denied, unreachable
        if failed is not None:
            raise failed from None
        raise ValueError(
            f"{shown_url(source.url)}: cannot parse as {source.suffix[1:]}: {exc}"
        ) from None


class _parquet:
    """A ParquetFile on pyarrow's filesystem for `url`, closed on exit."""

    def __init__(self, url: str, columns: int = 1):
        afs, path, _ = arrow_fs(url)
        self.file = afs.open_input_file(path)
        buffer = max(64 << 10, STREAM_BYTES // max(1, columns))
        try:
            self.pf = pq.ParquetFile(self.file, buffer_size=buffer, pre_buffer=False)
            meta = self.pf.metadata
            largest = max(
                (
                    sum(
                        meta.row_group(i).column(j).total_compressed_size
                        for j in range(meta.num_columns)
                    )
                    for i in range(meta.num_row_groups)
                ),
                default=0,
            )
            if largest <= PREBUFFER_BYTES:
                self.pf = pq.ParquetFile(self.file, metadata=meta, pre_buffer=True)
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> pq.ParquetFile:
        return self.pf

    def __exit__(self, *exc) -> None:
        self.file.close()


class _csv:
    """pyarrow's streaming CSV reader for `url`; numeric columns (by the first block's
    types) read as float64, so a later block cannot change a column's type."""

    def __init__(self, url: str, numeric: list[str] | None = None):
        if numeric is None:
            names, types, _ = _csv_schema(url)
            numeric = [n for n, t in zip(names, types, strict=True) if is_feature_type(t)]
        afs, path, _ = arrow_fs(url)
        self.stream = afs.open_input_stream(path)
        try:
            self.reader = pacsv.open_csv(
                self.stream,
                read_options=pacsv.ReadOptions(block_size=BATCH_BYTES),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.float64() for n in numeric}
                ),
            )
        except BaseException:
            self.stream.close()
            raise

    def __enter__(self) -> pacsv.CSVStreamingReader:
        return self.reader

    def __exit__(self, *exc) -> None:
        self.stream.close()


def _csv_schema(url: str) -> tuple[list[str], list[pa.DataType], bool]:
    """Column names and the types pyarrow infers from the first block, and whether that
    block holds a row (a header-only file is empty before anything starts)."""
    afs, path, _ = arrow_fs(url)
    with afs.open_input_stream(path) as stream:
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=BATCH_BYTES))
        rows = any(batch.num_rows for batch in _first(reader))
    return reader.schema.names, reader.schema.types, rows


def _first(reader: pacsv.CSVStreamingReader) -> list[pa.RecordBatch]:
    try:
        return [reader.read_next_batch()]
    except StopIteration:
        return []


def _schema(url: str) -> tuple[pa.Schema, int | None]:
    where = shown_url(url)
    try:
        if url.split("?", 1)[0].lower().endswith(".parquet"):
            with _parquet(url) as pf:
                return pf.schema_arrow, pf.metadata.num_rows
        names, types, rows = _csv_schema(url)
        return pa.schema(list(zip(names, types, strict=True))), None if rows else 0
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except (pa.ArrowInvalid, OSError) as exc:
        failed = storage_error(exc, url, "read")  # pyarrow's S3: denied, unreachable
        if failed is not None:
            raise failed from None
        kind = url.split("?", 1)[0].rsplit(".", 1)[-1]
        raise ValueError(f"{where}: cannot parse as {kind}: {first_line(exc)}") from None


def _check_finite(X: np.ndarray, names: tuple[str, ...], where: str, first: int) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    row, col = (int(v) for v in np.argwhere(~finite)[0])
    count = int((~finite[:, col]).sum())
    raise ValueError(
        f"{where}: feature column '{names[col]}' has {count} NaN/inf value(s) in rows "
        f"{first}-{first + len(X) - 1} (first: {X[row, col]} at row {first + row})"
    )


def _npz(url: str) -> tuple[np.ndarray, np.ndarray | None]:
    """X and y (or None) of an npz file, which is read whole: the format cannot stream."""
    where = shown_url(url)
    try:
        with np.load(io.BytesIO(read_bytes(url)), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # parsers fail in many types; report them as one
        raise ValueError(f"{where}: cannot parse as npz: {exc}") from exc
    if "X" not in arrays:
        raise ValueError(f"{where}: npz has no array 'X' (found {sorted(arrays)})")
    X, y = arrays["X"], arrays.get("y")
    if X.ndim != 2:
        raise ValueError(f"{where}: array 'X' must be 2-d (n, d), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) and X.dtype != bool:
        raise ValueError(f"{where}: array 'X' is not numeric (dtype {X.dtype})")
    if y is not None and y.shape != (len(X),):
        raise ValueError(
            f"{where}: array 'y' must have shape ({len(X)},) to match X, got {y.shape}"
        )
    if len(X) == 0:
        raise ValueError(f"{where}: table is empty (0 rows)")
    return X, y
