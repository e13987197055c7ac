"""A Parquet table seen through its footer: columns, row groups, and reads of only the
groups that hold the rows asked for.

Every distributed read goes through here, so the checks on what a table holds (numeric
features, finite values, labels in {0, 1}) have one owner and every error names the file
and column at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ede.core.checks import check_labels
from ede.data.columns import check_feature_types, column_floats, label_present, schema_types
from ede.data.columns import feature_columns as training_features
from ede.storage import absolute, shown_url

SCALER_KEY = "ede.scaler"  # footer key: the scaler ingest fitted on the table's fit rows


@dataclass(frozen=True)
class ParquetLayout:
    """Where a table is and how its rows fall into row groups (no data)."""

    url: str
    feature_names: tuple[str, ...]
    label_column: str | None  # None: the column is absent, every row unlabelled
    group_rows: tuple[int, ...]
    footer_scaler: str | None = None  # JSON under SCALER_KEY in the footer, if any

    @property
    def n_rows(self) -> int:
        return sum(self.group_rows)

    @property
    def group_starts(self) -> np.ndarray:
        """First row of each group, then n_rows."""
        return np.concatenate([[0], np.cumsum(self.group_rows, dtype=np.int64)])

    def _open(self) -> pq.ParquetFile:
        fs, path = fsspec.core.url_to_fs(self.url)
        return pq.ParquetFile(fs.open(path, "rb"))

    def group_span(self, start: int, stop: int) -> range:
        """Indices of the row groups overlapping rows [start, stop)."""
        if stop <= start:
            return range(0)
        starts = self.group_starts
        lo = int(np.searchsorted(starts, start, side="right")) - 1
        hi = int(np.searchsorted(starts, stop, side="left"))
        return range(lo, hi)

    def groups(
        self, start: int, stop: int, columns: list[str] | None = None
    ) -> Iterator[tuple[int, pa.Table]]:
        """(first row index, table) of each row group overlapping rows [start, stop)."""
        for _, first, table in self.indexed_groups(self.group_span(start, stop), columns):
            yield first, table

    def indexed_groups(
        self, indices: Iterator[int] | range, columns: list[str] | None = None
    ) -> Iterator[tuple[int, int, pa.Table]]:
        """(group index, first row index, table) of the given row groups, in order."""
        indices = list(indices)
        if not indices:
            return
        pf, starts = self._open(), self.group_starts
        if columns is None:
            columns = list(self.feature_names) + ([self.label_column] if self.label_column else [])
        for i in indices:
            yield i, int(starts[i]), pf.read_row_group(i, columns=columns)

    def arrays(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        X = np.column_stack(
            [column_floats(table.column(c)).astype(np.float32) for c in self.feature_names]
        )
        if not np.isfinite(X).all():
            bad = self.feature_names[int(np.argwhere(~np.isfinite(X))[0][1])]
            raise ValueError(f"{shown_url(self.url)}: feature column '{bad}' has NaN/inf values")
        if self.label_column is None:
            return X, np.zeros(len(X), dtype=np.int64)
        return X, _labels(table.column(self.label_column).to_numpy(), self)


def inspect_parquet(
    url: str,
    label_column: str | None = "label",
    feature_columns: list[str] | None = None,
    id_columns: list[str] | None = None,
) -> ParquetLayout:
    """Read the footer only; fail with one line naming the file or column at fault. The
    layout keeps the path absolute: Ray's workers read it from folders of their own."""
    url = absolute(url)
    if not url.split("?", 1)[0].lower().endswith(".parquet"):
        raise ValueError(
            f"{shown_url(url)}: distributed training reads Parquet (workers read their row "
            "groups); convert the table to .parquet"
        )
    fs, path = fsspec.core.url_to_fs(url)
    try:
        meta = pq.ParquetFile(fs.open(path, "rb")).metadata
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown_url(url)}: no such file") from None
    schema = meta.schema.to_arrow_schema()
    has_label = label_present(schema.names, label_column, shown_url(url))
    label = label_column if has_label else None
    names = feature_columns or training_features(schema.names, label, id_columns, shown_url(url))
    for name in names:
        if name not in schema.names:
            raise ValueError(f"{shown_url(url)}: requested feature column '{name}' is missing")
    check_feature_types(schema_types(schema), names, shown_url(url))
    if not names or meta.num_rows == 0:
        raise ValueError(f"{shown_url(url)}: no feature columns or no rows")
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    footer = (meta.metadata or {}).get(SCALER_KEY.encode())
    return ParquetLayout(
        url,
        tuple(names),
        label_column if has_label else None,
        groups,
        footer.decode() if footer else None,
    )


def _labels(values: np.ndarray, layout: ParquetLayout) -> np.ndarray:
    return check_labels(values, f"{shown_url(layout.url)}: label column '{layout.label_column}'")


def read_labels(layout: ParquetLayout, rows: np.ndarray | None = None) -> np.ndarray:
    """The label column alone, every row's or (sorted `rows`) those rows' only, reading only
    the groups that hold them; zeros when the table has none."""
    if layout.label_column is None:
        return np.zeros(layout.n_rows if rows is None else len(rows), dtype=np.int64)
    if rows is None:
        column = layout._open().read(columns=[layout.label_column]).column(0).to_numpy()
        return _labels(column, layout)
    rows = np.asarray(rows, dtype=np.int64)
    out = []
    if len(rows):
        span = layout.group_span(int(rows[0]), int(rows[-1]) + 1)
        for _, first, table in layout.indexed_groups(span, [layout.label_column]):
            local = rows[(rows >= first) & (rows < first + table.num_rows)] - first
            if len(local):
                out.append(_labels(table.column(0).to_numpy()[local], layout))
    return np.concatenate(out) if out else np.empty(0, np.int64)


def unlabelled_outside(layout: ParquetLayout, skip: np.ndarray) -> int:
    """Unlabelled (label 0) rows outside `skip`, counted group by group."""
    if layout.label_column is None:
        return layout.n_rows - len(skip)
    zeros, skip = 0, np.sort(np.asarray(skip, dtype=np.int64))
    for first, table in layout.groups(0, layout.n_rows, [layout.label_column]):
        y = _labels(table.column(0).to_numpy(), layout)
        rows = np.arange(first, first + len(y))
        zeros += int(((y == 0) & ~np.isin(rows, skip, assume_unique=True)).sum())
    return zeros


def read_rows(layout: ParquetLayout, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unscaled) rows by index, in index order; reads only the groups that hold them."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    Xs, ys = [], []
    if len(rows):
        for first, table in layout.groups(int(rows[0]), int(rows[-1]) + 1):
            local = rows[(rows >= first) & (rows < first + table.num_rows)] - first
            if len(local):
                X, y = layout.arrays(table.take(pa.array(local)))
                Xs.append(X)
                ys.append(y)
    d = len(layout.feature_names)
    if not Xs:
        return np.empty((0, d), np.float32), np.empty(0, np.int64)
    return np.concatenate(Xs), np.concatenate(ys)
