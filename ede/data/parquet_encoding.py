"""How ede writes Parquet: dictionary encoding only for the columns whose values repeat.

pyarrow dictionary-encodes every column by default. Floating-point features and
scores almost never repeat, so each column chunk fills its dictionary page, falls back
to plain encoding and keeps both: 200k rows of 20 float32 features and a label were
written 15x slower than without a dictionary, into a file 1.5x the size, and read back
1.7x slower (`benchmarks/parquet_encoding.py`, one core). Image bytes and nested values
rarely repeat either. Labels, integer ids, strings and dates still get one. Every
writer of a table ede produces takes its options from here: the prepared splits, the
scores, a model folder's validation rows, and `ede.data.tables.write_table`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

_REPEATING = (
    pa.types.is_integer,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_temporal,
    pa.types.is_dictionary,
)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a dictionary: integers, strings, dates and times (Parquet stores
    booleans as bits, with none)."""
    return [f.name for f in schema if any(kind(f.type) for kind in _REPEATING)]


def writer_options(schema: pa.Schema) -> dict:
    """Keyword arguments for `pq.ParquetWriter` / `pq.write_table` of `schema`."""
    return {"use_dictionary": dictionary_columns(schema)}


def parquet_writer(sink, schema: pa.Schema) -> pq.ParquetWriter:
    """A streaming writer of `schema` into `sink` (a path or an open binary file)."""
    return pq.ParquetWriter(sink, schema, **writer_options(schema))
