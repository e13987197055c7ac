"""What a table must hold for the exported model, checked before and while scoring.

Before: from a file's footer (Parquet) or header (CSV) alone, so every input can
be checked before the first output is written. While: values (NaN, inf,
missing, image sizes of variable-length lists), which only a read shows.
Each failure is one ValueError naming the file, the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ede.data.columns import check_feature_types, column_floats, is_number
from ede.export.artifact import IMAGE_COLUMN, OUTPUT_NAMES
from ede.storage import first_line, storage_error


@dataclass(frozen=True)
class Spec:
    """What the graph needs from a table, from metadata.json."""

    feature_names: list[str]
    input_shape: tuple[int, ...]

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def inputs(self) -> list[str]:
        return [IMAGE_COLUMN] if self.is_image else self.feature_names


def inspect(afs: pafs.FileSystem, path: str, shown: str, fmt: str) -> tuple[pa.Schema, int | None]:
    """Schema and row count (CSV: None, after reading just enough to reject an empty file)."""
    try:
        if afs.get_file_info(path).size == 0:
            raise ValueError(f"{shown}: file is empty (0 bytes)")
        if fmt == "parquet":
            with afs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
            schema, rows = meta.schema.to_arrow_schema(), meta.num_rows
        else:
            dataset = ds.dataset(path, format="csv", filesystem=afs)
            schema, rows = dataset.schema, dataset.head(1).num_rows or 0
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        failed = storage_error(exc, shown, "read")  # pyarrow's S3: denied, unreachable
        if failed is not None:
            raise failed from None
        raise ValueError(f"{shown}: cannot read as {fmt}: {first_line(exc)}") from None
    if rows == 0:
        raise ValueError(f"{shown}: table is empty (0 rows)")
    return schema, rows if fmt == "parquet" else None


def check_schema(
    schema: pa.Schema, spec: Spec, shown: str, id_columns: list[str] | None
) -> list[str]:
    """The pass-through columns, after checking the model's inputs are there and numeric."""
    names = schema.names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{shown}: duplicate column name(s): {dup}")
    missing = [n for n in spec.inputs if n not in names]
    if missing:
        what = "image column" if spec.is_image else f"of {len(spec.inputs)} feature column(s)"
        raise ValueError(f"{shown}: missing {len(missing)} {what} the model needs: {missing}")
    for name in spec.inputs:
        _check_type(schema.field(name).type, name, spec, shown)
    others = [n for n in names if n not in spec.inputs]
    if id_columns is not None:
        absent = [n for n in id_columns if n not in names]
        if absent:
            raise ValueError(f"{shown}: --id-columns not in the table: {absent}")
        others = list(id_columns)
    clash = [n for n in others if n in OUTPUT_NAMES]
    if clash:
        raise ValueError(
            f"{shown}: column(s) {clash} would clash with the output columns; "
            "rename them or choose --id-columns"
        )
    return others


def _check_type(t: pa.DataType, name: str, spec: Spec, shown: str) -> None:
    if not spec.is_image:
        check_feature_types({name: t}, [name], shown)
        return
    lists = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    if not lists or not is_number(t.value_type):
        raise ValueError(
            f"{shown}: column '{name}' must hold lists of numbers (flattened images), got {t}"
        )
    size = int(np.prod(spec.input_shape))
    if pa.types.is_fixed_size_list(t) and t.list_size != size:
        raise ValueError(_shape_error(shown, name, t.list_size, spec.input_shape))


def _shape_error(shown: str, name: str, got: int, shape: tuple[int, ...], row: str = "") -> str:
    size = int(np.prod(shape))
    return (
        f"{shown}: column '{name}'{row} holds images of {got} values; the model expects "
        f"shape {tuple(shape)} = {size} values"
    )


def model_input(batch: pa.RecordBatch, spec: Spec, shown: str, first_row: int) -> np.ndarray:
    """The graph's float32 input for one batch; NaN, inf and missing values are refused."""
    n = batch.num_rows
    if spec.is_image:
        col = batch.column(IMAGE_COLUMN)
        size = int(np.prod(spec.input_shape))
        lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy()
        bad = np.flatnonzero(lengths != size)
        if len(bad):
            row = f" row {first_row + bad[0]}"
            if lengths[bad[0]] < 0:
                raise ValueError(f"{shown}: column '{IMAGE_COLUMN}'{row} is missing (null)")
            raise ValueError(
                _shape_error(shown, IMAGE_COLUMN, lengths[bad[0]], spec.input_shape, row)
            )
        values = col.flatten().to_numpy(zero_copy_only=False)
        X = np.asarray(values, dtype=np.float32).reshape(n, *spec.input_shape)
        names = [IMAGE_COLUMN]
        flat = X.reshape(n, 1, -1)
    else:
        names = spec.feature_names
        X = np.empty((n, len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            X[:, j] = column_floats(batch.column(name))  # null -> NaN
        flat = X[:, :, None]
    if not np.isfinite(X).all():
        bad = ~np.isfinite(flat).all(axis=2)  # (n, columns)
        j = int(bad.any(axis=0).argmax())
        rows = np.flatnonzero(bad[:, j])
        raise ValueError(
            f"{shown}: column '{names[j]}' has {len(rows)} NaN/inf/missing value(s) in rows "
            f"{first_row}..{first_row + n - 1} (first at row {first_row + rows[0]})"
        )
    return X
