"""Prepared splits written in bounded memory: the rows streamed into test.parquet and
train.parquet in the order and row groups `ede.data.split_rules` decides, with the
scaler fitted on the way.

**Shuffle**: the fit rows are put in a seeded, uniformly random order (numpy's
permutation of F with `seed`, the order earlier ede versions wrote), because workers
read contiguous ranges and a table sorted by label would hand one worker all the
labelled anomalies; shuffling within blocks would leave such a table sorted. A full
permutation needs random access, so the writing pass routes every fit row, tagged
with its target position, to a spill file on local disk (bucket b holds the
positions of a run of whole row groups, at most BUCKET_BYTES of features); then one
bucket at a time is loaded, its rows put in place and its row groups written.
Memory: a batch, a bucket, and 4 bytes per fit row for the positions; local disk: one
copy of the fit and validation rows, removed at the end.

**Scaler**: ESAD's default, `quantile_minmax`, fitted once on the fit rows exactly as
`ede.data.shard_scaler.fit_scaler` would fit it on train.parquet (percentiles of a seeded
sample of at most QUANTILE_SAMPLE rows, `shard_scaler.scaler_sample`), from the rows as they
are written; recorded in the manifest and in train.parquet's footer (`parquet_layout.SCALER_KEY`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ede.core.scaling import QuantileMinMaxScaler
from ede.data.parquet_encoding import parquet_writer
from ede.data.parquet_layout import SCALER_KEY
from ede.data.shard_scaler import scaler_sample
from ede.data.split_rules import (
    FIT,
    RULE,
    TEST,
    VALIDATION,
    even_bounds,
    fit_group_bounds,
    fit_positions,
    max_group_rows,
)
from ede.storage import open_atomic

BUCKET_BYTES = 16 << 20
SCALING = "quantile_minmax"  # ESAD's default, the one the pipeline trains with

Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


# ----------------------------------------------------------------------------- writing


@dataclass
class Written:
    rows: dict[str, int]
    labelled: dict[str, int]
    row_groups: dict
    scaler: dict = field(default_factory=dict)


def write_splits(
    batches: Batches,
    codes: np.ndarray,
    names: list[str],
    label: str,
    train_url: str,
    test_url: str,
    seed: int,
) -> Written:
    """Stream `batches()` (checked (X, y) in the order `codes` follows) into test.parquet
    and train.parquet, each written to a temporary sibling and moved into place."""
    if label in names:
        raise ValueError(f"label column '{label}' clashes with a feature name")
    d = len(names)
    pos = fit_positions(codes, seed)
    bounds = fit_group_bounds(len(pos), d)
    per_bucket = max(1, BUCKET_BYTES // (4 * d * max(1, int(np.diff(bounds).max()))))
    starts = bounds[::per_bucket]  # bucket b: positions [starts[b], starts[b+1])
    starts = starts if starts[-1] == len(pos) else np.append(starts, len(pos))
    out = _Out(
        schema=pa.schema([(n, pa.float32()) for n in names] + [(label, pa.int64())]),
        record=np.dtype([("x", np.float32, (d,)), ("y", np.int8), ("p", pos.dtype)]),
        g=max_group_rows(d),
    )
    with tempfile.TemporaryDirectory(prefix="ede-ingest-") as tmp:
        counts, labelled = _spill_and_write_test(batches, codes, pos, starts, tmp, test_url, out)
        scaler = _write_train(bounds, starts, counts["validation"], tmp, train_url, seed, out)
    return Written(
        rows=counts,
        labelled=labelled,
        row_groups={
            "rule": RULE,
            "max_group_rows": out.g,
            "fit_groups": len(bounds) - 1,
            "train": out.groups["train"],
            "test": out.groups["test"],
        },
        scaler=scaler,
    )


@dataclass
class _Out:
    schema: pa.Schema
    record: np.dtype  # a spilled row: features, label, target position
    g: int  # max_group_rows
    groups: dict[str, list[int]] = field(default_factory=lambda: {"train": [], "test": []})


def _spill_and_write_test(batches, codes, pos, starts, tmp, test_url, out: _Out):
    """The second pass: test rows into test.parquet, validation rows and (by bucket) fit
    rows with their target positions into spill files. Returns rows and labelled counts."""
    counts = {"fit": len(pos), "validation": 0, "test": 0}
    labelled = {"fit": 0, "validation": 0, "test": 0}
    with contextlib.ExitStack() as files, _atomic_parquet(test_url, out.schema) as test:
        paths = [Path(tmp, f"bucket-{b}") for b in range(len(starts) - 1)]
        spill = [files.enter_context(open(path, "wb")) for path in paths]
        val_spill = files.enter_context(open(Path(tmp, "validation"), "wb"))

        def emit(X: np.ndarray, y: np.ndarray) -> None:
            out.groups["test"].append(_write(test, X, y, out.schema))

        pending = _Pending(out.g, out.record["x"].shape[0], emit)
        at = k = 0
        for X, y in batches():
            if at + len(X) > len(codes):
                raise ValueError(f"the input changed while it was read (over {len(codes)} rows)")
            c = codes[at : at + len(X)]
            at += len(X)
            y = np.zeros(len(X), np.int64) if y is None else y
            is_test, is_val, is_fit = c == TEST, c == VALIDATION, c == FIT
            pending.add(X[is_test], y[is_test])
            _records(out.record, X[is_val], y[is_val], 0).tofile(val_spill)
            p = pos[k : k + int(is_fit.sum())]
            k += len(p)
            rec = _records(out.record, X[is_fit], y[is_fit], p)
            bucket = np.searchsorted(starts, p, side="right") - 1
            for b in np.unique(bucket):
                rec[bucket == b].tofile(spill[b])
            for key, mask in (("validation", is_val), ("test", is_test)):
                counts[key] += int(mask.sum())
            for key, mask in (("fit", is_fit), ("validation", is_val), ("test", is_test)):
                labelled[key] += int(y[mask].sum())
        pending.flush()
        if at != len(codes) or k != len(pos):
            raise ValueError(f"the input changed while it was read ({at} of {len(codes)} rows)")
    return counts, labelled


def _write_train(bounds, starts, n_val, tmp, train_url, seed, out: _Out) -> dict:
    """The third pass: each bucket's fit rows put in place and written as its row groups,
    the scaler's sample taken on the way; then the validation rows. Returns the scaler."""
    n_fit, d = int(bounds[-1]), out.record["x"].shape[0]
    sample = scaler_sample(n_fit, seed)
    picked = np.empty((n_fit if sample is None else len(sample), d), np.float32)
    at = 0
    with _atomic_parquet(train_url, out.schema) as train:
        for b in range(len(starts) - 1):
            lo, hi = int(starts[b]), int(starts[b + 1])
            rec = np.fromfile(Path(tmp, f"bucket-{b}"), dtype=out.record)
            Path(tmp, f"bucket-{b}").unlink()
            if len(rec) != hi - lo:
                raise ValueError("the input changed while it was read (fit rows)")
            order = np.empty(hi - lo, dtype=rec["p"].dtype)  # row of rec at each position
            order[rec["p"] - lo] = np.arange(hi - lo, dtype=order.dtype)
            inside = bounds[(bounds >= lo) & (bounds <= hi)] - lo
            for a, z in zip(inside[:-1], inside[1:], strict=True):
                part = rec[order[a:z]]
                out.groups["train"].append(_write(train, part["x"], part["y"], out.schema))
            if sample is not None:
                order = order[sample[(sample >= lo) & (sample < hi)] - lo]
            picked[at : at + len(order)] = rec["x"][order]
            at += len(order)
            del rec, order
        scaler = _fit_scaler(picked)
        del picked
        vb = even_bounds(n_val, out.g)
        with open(Path(tmp, "validation"), "rb") as f:
            for a, z in zip(vb[:-1], vb[1:], strict=True):
                part = np.fromfile(f, dtype=out.record, count=int(z - a))
                if len(part):
                    out.groups["train"].append(_write(train, part["x"], part["y"], out.schema))
        record = {
            "kind": SCALING,
            **scaler.to_dict(),
            "fit_rows": n_fit,
            "sample_rows": n_fit if sample is None else len(sample),
            "seed": seed,
        }
        train.add_key_value_metadata({SCALER_KEY: json.dumps(record)})
    return record


def _fit_scaler(X: np.ndarray) -> QuantileMinMaxScaler:
    """`QuantileMinMaxScaler().fit(X)`, one feature at a time: the same map (each feature's
    percentiles are its own) without a float64 copy of the whole sample."""
    parts = [QuantileMinMaxScaler().fit(X[:, j : j + 1]) for j in range(X.shape[1])]
    scaler = QuantileMinMaxScaler()
    scaler.offset_ = np.concatenate([p.offset_ for p in parts])
    scaler.scale_ = np.concatenate([p.scale_ for p in parts])
    return scaler


def _records(dtype: np.dtype, X: np.ndarray, y: np.ndarray, p) -> np.ndarray:
    rec = np.empty(len(X), dtype=dtype)
    rec["x"], rec["y"], rec["p"] = X, y, p
    return rec


def _write(writer: pq.ParquetWriter, X: np.ndarray, y: np.ndarray, schema: pa.Schema) -> int:
    """One row group; returns its row count."""
    arrays = [pa.array(np.ascontiguousarray(X[:, j])) for j in range(X.shape[1])]  # no copy
    # when X is a transposed column buffer (`_Pending`): each column is contiguous
    table = pa.Table.from_arrays([*arrays, pa.array(y.astype(np.int64))], schema=schema)
    writer.write_table(table, row_group_size=max(1, len(X)))
    return len(X)


class _Pending:
    """Rows waiting to fill a row group of `size` rows, in one preallocated buffer (features
    by column, so each column is written as it lies)."""

    def __init__(self, size: int, d: int, emit: Callable[[np.ndarray, np.ndarray], None]):
        self.size, self.emit, self.n = size, emit, 0
        self.X = np.empty((d, size), dtype=np.float32)
        self.y = np.empty(size, dtype=np.int64)

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        at = 0
        while at < len(X):
            take = min(self.size - self.n, len(X) - at)
            self.X[:, self.n : self.n + take] = X[at : at + take].T
            self.y[self.n : self.n + take] = y[at : at + take]
            self.n, at = self.n + take, at + take
            if self.n == self.size:
                self.flush()

    def flush(self) -> None:
        if self.n:
            self.emit(self.X[:, : self.n].T, self.y[: self.n])
        self.n = 0


@contextlib.contextmanager
def _atomic_parquet(url: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer streamed through `ede.storage.open_atomic`: a failure leaves nothing."""
    with open_atomic(url, block_size=8 << 20) as f:
        writer = parquet_writer(f, schema)
        try:
            yield writer
        finally:
            writer.close()
