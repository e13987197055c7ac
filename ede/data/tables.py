"""Tabular data from any fsspec URL: local paths, ``file://`` and ``s3://``.

Every reader funnels into one validation path so a bad file fails the same way
whatever its format: one ``ValueError`` naming the file and the column or value
at fault, before any model sees the data. S3 endpoints and credentials come
from the standard AWS chain (``AWS_ENDPOINT_URL``, ``AWS_*``, ``~/.aws``),
never from code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ede.core.checks import check_labels
from ede.data.columns import check_feature_types, frame_types, label_present
from ede.data.columns import feature_columns as training_features
from ede.data.parquet_encoding import writer_options
from ede.storage import read_bytes, shown_url, write_bytes_atomic

SUFFIXES = (".npz", ".parquet", ".csv")
IMAGE_COLUMN = "image"  # tables of images: one list column, each row a flattened (c, h, w)


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise is not a bool
class Table:
    """Features and optional labels (1 = anomaly, 0 = normal/unlabelled) read from ``source``."""

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    source: str


def _suffix(url: str) -> str:
    path = url.split("?", 1)[0].rstrip("/").lower()
    for suffix in SUFFIXES:
        if path.endswith(suffix):
            return suffix
    raise ValueError(
        f"{shown_url(url)}: unknown table format; expected one of {', '.join(SUFFIXES)}"
    )


def read_table(
    url: str,
    label_column: str | None = "label",
    feature_columns: list[str] | None = None,
    data: bytes | None = None,
    id_columns: list[str] | None = None,
) -> Table:
    """Read and validate a table; ``label_column=None`` gives ``y=None`` (a named label
    column that is absent is an error: `ede.data.columns.label_present`).

    ``.npz`` files hold arrays ``X`` and optionally ``y``; their features are named
    ``f0 .. f{d-1}`` and their label column is called ``y`` in messages. ``data``: the
    file's bytes, read and checked already (a model folder's validation rows), so the
    rows parsed are the bytes whose sha256 was checked. Without ``feature_columns`` the
    features are every column but the label and ``id_columns``
    (`ede.core.checks.feature_columns`).
    """
    if _suffix(url) == ".npz":
        raw = read_bytes(url) if data is None else data
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as exc:  # parsers fail in many types; report them as one
            raise ValueError(f"{shown_url(url)}: cannot parse as npz: {exc}") from exc
        frame, label_column = _npz_frame(arrays, url, label_column)
    else:
        frame = read_frame(url, data)
    return _frame_to_table(frame, url, label_column, feature_columns, id_columns)


def read_frame(url: str, data: bytes | None = None) -> pd.DataFrame:
    """A Parquet or CSV file as it is, whole (small tables: a labels table, validation
    rows); one ValueError naming the file when it does not parse."""
    suffix = _suffix(url)
    if suffix == ".npz":
        raise ValueError(f"{shown_url(url)}: expected a .parquet or .csv table")
    raw = read_bytes(url) if data is None else data
    try:
        if suffix == ".parquet":
            return pd.read_parquet(io.BytesIO(raw))
        return pd.read_csv(io.BytesIO(raw))
    except Exception as exc:  # parsers fail in many types; report them as one
        raise ValueError(f"{shown_url(url)}: cannot parse as {suffix[1:]}: {exc}") from exc


def _npz_frame(
    arrays: dict[str, np.ndarray], url: str, label_column: str | None
) -> tuple[pd.DataFrame, str | None]:
    if "X" not in arrays:
        raise ValueError(f"{shown_url(url)}: npz has no array 'X' (found {sorted(arrays)})")
    X = arrays["X"]
    y = arrays.get("y") if label_present(arrays, label_column and "y", shown_url(url)) else None
    if X.ndim != 2:
        raise ValueError(f"{shown_url(url)}: array 'X' must be 2-d (n, d), got shape {X.shape}")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    if y is None:
        return frame, None
    if y.shape != (len(X),):
        raise ValueError(
            f"{shown_url(url)}: array 'y' must have shape ({len(X)},) to match X, got {y.shape}"
        )
    frame["y"] = y
    return frame, "y"


def _frame_to_table(
    frame: pd.DataFrame,
    url: str,
    label_column: str | None,
    feature_columns: list[str] | None,
    id_columns: list[str] | None = None,
) -> Table:
    where = shown_url(url)
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise ValueError(f"{where}: table is empty (0 rows)")
    has_label = label_present(frame.columns, label_column, where)
    if feature_columns is None:
        label = label_column if has_label else None
        names = training_features(frame.columns, label, id_columns, where)
    else:
        names = [str(c) for c in feature_columns]
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise ValueError(f"{where}: requested feature column(s) missing: {missing}")
        if has_label and label_column in names:
            raise ValueError(f"{where}: label column '{label_column}' requested as a feature")
    if not names:
        raise ValueError(f"{where}: no feature columns")
    check_feature_types(frame_types(frame[names]), names, where)
    X = frame[names].to_numpy(dtype=np.float32, na_value=np.nan)
    bad_counts = (~np.isfinite(X)).sum(axis=0)
    for name, count in zip(names, bad_counts, strict=True):
        if count:
            raise ValueError(f"{where}: feature column '{name}' has {count} NaN/inf value(s)")
    y = (
        check_labels(frame[label_column], f"{where}: label column '{label_column}'")
        if has_label
        else None
    )
    return Table(X=X, y=y, feature_names=names, source=url)


def read_labelled_rows(
    url: str,
    feature_names: list[str],
    input_shape: tuple[int, ...],
    label_column: str = "label",
    data: bytes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) in a model's feature order, for the rows a model is judged on (validation or
    test); y = 1 for a labelled anomaly, 0 otherwise. The label column must be there
    (`ede.data.columns.label_present`): rows without it would all count as normal.

    Images come as one list column (``IMAGE_COLUMN``) of flattened ``input_shape`` rows.
    ``data``: the bytes of ``url``, read already (see `read_table`).
    """
    if len(input_shape) == 1:
        table = read_table(url, label_column, feature_names, data)
        return table.X, table.y
    raw = read_bytes(url) if data is None else data
    where, t = shown_url(url), pq.read_table(io.BytesIO(raw))
    if IMAGE_COLUMN not in t.column_names:
        raise ValueError(f"{where}: no '{IMAGE_COLUMN}' column of flattened images")
    X = np.asarray(t.column(IMAGE_COLUMN).combine_chunks().flatten(), dtype=np.float32)
    if X.size != int(np.prod(input_shape)) * t.num_rows:
        raise ValueError(f"{where}: '{IMAGE_COLUMN}' rows are not images of {input_shape}")
    label_present(t.column_names, label_column, where)
    y = check_labels(t.column(label_column).to_numpy(), f"{where}: label column '{label_column}'")
    return X.reshape(t.num_rows, *input_shape), y


def _to_frame(table_or_df: Table | pd.DataFrame, label_column: str) -> pd.DataFrame:
    if isinstance(table_or_df, pd.DataFrame):
        return table_or_df
    frame = pd.DataFrame(table_or_df.X, columns=table_or_df.feature_names)
    if table_or_df.y is not None:
        if label_column in frame.columns:
            raise ValueError(f"label column '{label_column}' clashes with a feature name")
        frame[label_column] = table_or_df.y
    return frame


def write_table(
    table_or_df: Table | pd.DataFrame, url: str, *, label_column: str = "label"
) -> None:
    """Write parquet atomically so readers never see a half-written table.

    The bytes go to a temporary sibling key, which is then moved onto ``url``; on
    any failure the temporary key is removed and ``url`` is left untouched.
    """
    if not url.split("?", 1)[0].lower().endswith(".parquet"):
        raise ValueError(f"{shown_url(url)}: write_table writes parquet; use a .parquet URL")
    buffer = io.BytesIO()
    # Serialise before touching storage: a frame pyarrow rejects leaves nothing behind.
    arrow = pa.Table.from_pandas(_to_frame(table_or_df, label_column), preserve_index=False)
    pq.write_table(arrow, buffer, **writer_options(arrow.schema))
    write_bytes_atomic(url, buffer.getvalue())
