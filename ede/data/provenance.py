"""What a model folder records about its data, so an export can be checked and traced.

`ede train` keeps the validation rows it carved out (`validation.parquet`) and a
`provenance.json` (data fingerprints, split, threshold calibration). `ede export`
reads both: it checks ONNX-vs-torch parity and reports metrics on rows the
network never fitted, and carries the fingerprints into the artifact's metadata.

Fingerprints hash the rows as the model saw them (float32 C-order features, then
int64 labels), not file bytes: the same rows in CSV or Parquet hash alike.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ede.data.tables import IMAGE_COLUMN, read_table
from ede.storage import shown_url, write_bytes_atomic

VALIDATION_FILE, PROVENANCE_FILE = "validation.parquet", "provenance.json"


def rows_sha256(X: np.ndarray, y: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def validation_table(
    X: np.ndarray, y: np.ndarray, feature_names: list[str], label_column: str = "label"
) -> pa.Table:
    """Tables keep their feature names; images go in one list column of flat (c*h*w) rows."""
    if X.ndim == 2:
        columns = {name: X[:, j] for j, name in enumerate(feature_names)}
    else:
        flat = np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32)
        columns = {IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(flat.ravel(), flat.shape[1])}
    if label_column in columns:
        raise ValueError(f"label column '{label_column}' clashes with a feature name")
    columns[label_column] = np.asarray(y, dtype=np.int64)
    return pa.table(columns)


def write_validation(folder: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes_atomic(f"{folder.rstrip('/')}/{VALIDATION_FILE}", buf.getvalue())


def read_validation(
    url: str, feature_names: list[str], input_shape: tuple[int, ...], label_column: str = "label"
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) in the model's feature order; y = 1 labelled anomaly, 0 otherwise."""
    if len(input_shape) == 1:
        table = read_table(url, label_column=label_column, feature_columns=feature_names)
        y = table.y if table.y is not None else np.zeros(len(table.X), dtype=np.int64)
        return table.X, y
    try:
        with fsspec.open(url, "rb") as f:
            t = pq.read_table(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown_url(url)}: no such file") from None
    if IMAGE_COLUMN not in t.column_names:
        raise ValueError(f"{shown_url(url)}: no '{IMAGE_COLUMN}' column of flattened images")
    size = int(np.prod(input_shape))
    X = np.asarray(t.column(IMAGE_COLUMN).combine_chunks().flatten(), dtype=np.float32)
    if X.size != size * t.num_rows:
        raise ValueError(f"{shown_url(url)}: '{IMAGE_COLUMN}' rows are not images of {input_shape}")
    y = t.column(label_column).to_numpy() if label_column in t.column_names else None
    return X.reshape(t.num_rows, *input_shape), (
        np.zeros(t.num_rows, np.int64) if y is None else y.astype(np.int64)
    )


def write_provenance(folder: str, record: dict[str, Any]) -> None:
    data = json.dumps(record, indent=2).encode()
    write_bytes_atomic(f"{folder.rstrip('/')}/{PROVENANCE_FILE}", data)


def read_provenance(folder: str) -> dict[str, Any] | None:
    """None for a model saved from Python without `ede train`'s record."""
    try:
        with fsspec.open(f"{folder.rstrip('/')}/{PROVENANCE_FILE}", "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
