"""Which columns of a user's table are what: the one rule every reader calls.

`ede train`'s in-memory read, the streaming ingest, Ray's footer reader and `ede score`
all decide here, so a table one path accepts is never refused by another. Roles: the
label (`label_present`), declared id / pass-through columns (never features), and the
features, every other column. A feature must hold numbers: integers, floats or booleans
(True = 1); a CSV column that is empty in its first block reads as null and counts as
numbers until its values say otherwise. Missing values are the readers' to refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa

NO_LABEL_HINT = "pass --no-label (label_column=None) if the data are unlabelled"


def label_present(columns, label_column: str | None, where: str) -> bool:
    """Whether the table's label column is there to read; None: the caller said the data
    are unlabelled. A named label column that is absent is an error, not "no labels": a
    renamed or dropped label would otherwise train on every row as normal, or become a
    feature, without a word."""
    if label_column is None:
        return False
    if label_column in columns:
        return True
    shown = sorted(str(c) for c in columns)
    missing = f"{where}: no label column '{label_column}' (columns {shown})"
    raise ValueError(f"{missing}; {NO_LABEL_HINT}")


def feature_columns(
    columns, label: str | None, id_columns: list[str] | None, where: str
) -> list[str]:
    """Training's features, by name: every column but the label (`label`: its name when
    present, from `label_present`) and the declared id/pass-through columns, in the
    table's order. A declared id column that is absent is an error naming it: a typo
    would otherwise train on the column meant to be left out."""
    columns = [str(c) for c in columns]
    ids = list(id_columns or [])
    absent = [c for c in ids if c not in columns]
    if absent:
        raise ValueError(f"{where}: --id-columns not in the table: {absent} (columns {columns})")
    if label is not None and label in ids:
        raise ValueError(f"{where}: label column '{label}' is also in --id-columns")
    return [c for c in columns if c != label and c not in ids]


def is_number(kind: pa.DataType) -> bool:
    """Integers and floats: what an image's values and a feature's numbers may be."""
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def is_feature_type(kind: pa.DataType) -> bool:
    """The types a feature column may have (see the module's rule)."""
    return is_number(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)


def check_feature_types(types: Mapping[str, object], names: Iterable[str], where: str) -> None:
    """One error naming the first feature column whose type is not a feature's. `types`
    maps a column name to its Arrow type (a schema's fields) or its pandas dtype."""
    for name in names:
        kind = types[name]
        arrow, shown = (
            (kind, kind) if isinstance(kind, pa.DataType) else (arrow_type(kind), f"dtype {kind}")
        )
        if arrow is None or not is_feature_type(arrow):
            raise ValueError(f"{where}: feature column '{name}' is not numeric ({shown})")


def schema_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    return {name: schema.field(name).type for name in schema.names}


def frame_types(frame) -> dict[str, object]:
    """A pandas frame's column types for `check_feature_types`: each dtype, except that an
    object column (booleans with missing values read by pandas, text, mixed values) gets
    the Arrow type of its values, or stays `object` if they have none."""
    types: dict[str, object] = {}
    for name in frame.columns:
        dtype = frame[name].dtype
        types[name] = dtype
        if isinstance(dtype, np.dtype) and dtype.kind == "O":  # not pandas' str dtype
            try:
                types[name] = pa.infer_type(frame[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
    return types


def arrow_type(dtype) -> pa.DataType | None:
    """A pandas dtype's Arrow type, None where it has none (object columns: text, mixed)."""
    if isinstance(getattr(dtype, "pyarrow_dtype", None), pa.DataType):  # pandas' ArrowDtype
        return dtype.pyarrow_dtype
    numpy_dtype = getattr(dtype, "numpy_dtype", dtype)  # nullable Int64, boolean, Float64
    try:
        return pa.from_numpy_dtype(np.dtype(numpy_dtype))
    except (pa.ArrowNotImplementedError, TypeError):
        return None


def column_floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A feature column as numbers, missing values as NaN (booleans with nulls and null
    columns too, which NumPy would otherwise hold as objects)."""
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object:
        values = column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    return values
