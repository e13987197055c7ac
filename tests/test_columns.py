"""One rule for which columns are features and of what kind (ede.data.columns): every
reader of a user's table accepts and refuses the same column types, and reads a boolean
feature the same way, so a model `ede train` fits, `ede score` scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ede.data.batches import batches, inspect_source
from ede.data.columns import is_feature_type
from ede.data.parquet_layout import inspect_parquet
from ede.data.tables import read_table
from ede.scoring.inputs import Spec, check_schema, model_input

N = 40
COLUMNS = {  # name: (a column of N values, does the rule take it as a feature?)
    "int": (pa.array(np.arange(N, dtype=np.int32)), True),
    "float": (pa.array(np.linspace(0, 1, N)), True),
    "bool": (pa.array(np.arange(N) % 3 == 0), True),
    "text": (pa.array([f"v{i % 4}" for i in range(N)]), False),
    "timestamp": (pa.array(pd.date_range("2026-01-01", periods=N, freq="h")), False),
    "dictionary": (pa.array([f"v{i % 4}" for i in range(N)]).dictionary_encode(), False),
}


def _table(kind: str) -> pa.Table:
    label = pa.array((np.arange(N) % 10 == 0).astype(np.int64))
    return pa.table({"a": pa.array(np.ones(N)), "x": COLUMNS[kind][0], "label": label})


def _readers(path: str, table: pa.Table):
    """Each reader of a table, run on `path` as far as its type check and first read."""

    def score(path):
        spec = Spec(["a", "x"], (2,))
        check_schema(table.schema, spec, path, None)
        return model_input(table.to_batches()[0], spec, path, 0)

    return {
        "ede train (in memory)": lambda: read_table(path).X,
        "ingest (streaming)": lambda: next(batches(inspect_source(path, "label")))[0],
        "Ray's footer reader": lambda: inspect_parquet(path).arrays(pq.read_table(path))[0],
        "ede score": lambda: score(path),
    }


@pytest.mark.parametrize("kind", list(COLUMNS))
def test_every_reader_takes_the_same_feature_types(tmp_path, kind):
    table = _table(kind)
    path = str(tmp_path / f"{kind}.parquet")
    pq.write_table(table, path)
    takes = COLUMNS[kind][1]
    assert is_feature_type(table.schema.field("x").type) == takes
    for reader, read in _readers(path, table).items():
        if takes:
            X = read()
            assert X.shape == (N, 2), reader
            expected = np.asarray(COLUMNS[kind][0].to_numpy(zero_copy_only=False), float)
            np.testing.assert_array_equal(X[:, 1], expected.astype(np.float32), err_msg=reader)
        else:
            with pytest.raises(ValueError, match="feature column 'x' is not numeric"):
                read()


def test_a_boolean_with_missing_values_reads_as_nan_everywhere(tmp_path):
    """Readers then refuse the missing value with their own line, not a type error."""
    values = pa.array([True, None] + [False] * (N - 2))
    table = _table("bool").set_column(1, "x", values)
    path = str(tmp_path / "bool-null.parquet")
    pq.write_table(table, path)
    for reader, read in _readers(path, table).items():
        with pytest.raises(ValueError, match="'x' has (1 )?NaN") as got:
            read()
        assert "not numeric" not in str(got.value), reader
