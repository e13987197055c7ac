"""Per-worker reads of a Parquet table: each worker reads only the row groups of its shard.

The driver never holds the training features: it reads the label column (one small
column) to carve a stratified validation split, and takes the scaler from the
table's footer when ingest recorded one there (`ede.data.shard_scaler`, fitted on the same fit
rows), else fits it in one streaming pass over row groups (percentiles: on a seeded
sample of at most QUANTILE_SAMPLE rows, `scaler_sample`). Workers open the same URL:
the rows not held out are cut into W contiguous ranges, one per rank, and a rank
reads only the row groups that cover its range (`ParquetShard.groups_read` names
them). Validation rows travel as a `ValidationRows` reference, read where they are
used. A table from `ede.data.ingest` has its fit rows first, in row groups laid out
so that every power-of-two worker count up to the group count reads whole groups
(`ede.data.split_writer`), and already shuffled.

Shards are contiguous row ranges, so a table sorted by label gives workers
different mixes; DDP averages their gradients, so training is still correct, but
write shuffled tables for the smoothest runs.
"""

from __future__ import annotations

import numpy as np

from ede.core.scaling import AffineScaler
from ede.data.parquet_layout import ParquetLayout, read_rows
from ede.data.protocol import validation_split


def split_rows(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows): the very rows `ede train` in-process would pick."""
    rows = np.arange(len(y)).reshape(-1, 1)
    fit, _, val, _ = validation_split(rows, y, fraction=fraction, seed=seed)
    return fit[:, 0], val[:, 0]


def row_positions(rows) -> np.ndarray:
    """`rows` as sorted, distinct int64 positions. np.unique would do, but numpy 2's
    hashes integers: 0.48 s for 600k positions (a 4M-row flow's validation rows, handled
    twice per training) against 0.03 s for this sort."""
    a = np.sort(np.asarray(rows, dtype=np.int64))
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


def kept_row(skip: np.ndarray, k: int) -> int:
    """Index of the k-th row (0-based) not in sorted, unique `skip`."""
    shifted = skip - np.arange(len(skip))  # rows kept before each skipped row
    return k + int(np.searchsorted(shifted, k, side="right"))


class ParquetShard:
    """`config["data"]` for `train_loop`: the K rows not in `skip` (the validation split)
    are cut into `world_size` contiguous ranges; rank r reads the kept rows
    [floor(r K / w), floor((r + 1) K / w)) and only the row groups that cover them
    (`groups_read`, the indices of the last call). Rows are scaled with the driver's
    scaler. Pickled to workers as a URL, a row-group table and two arrays.
    """

    def __init__(self, layout: ParquetLayout, scaler: dict, skip: np.ndarray):
        self.layout, self.scaler = layout, scaler
        self.skip = row_positions(skip)
        self.groups_read: list[int] = []

    def rows(self, rank: int, world_size: int) -> tuple[int, int]:
        """[start, stop) of this rank's range in the table (it may hold skipped rows)."""
        kept = self.layout.n_rows - len(self.skip)
        lo, hi = rank * kept // world_size, (rank + 1) * kept // world_size
        if hi == lo:
            return 0, 0
        return kept_row(self.skip, lo), kept_row(self.skip, hi - 1) + 1

    def __call__(self, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(X scaled, y) of this rank's rows, scaled row group by row group into arrays
        of the shard's size: the shard is held once, not as pieces, their concatenation
        and the scaler's temporaries too (four times the shard, at once, before)."""
        start, stop = self.rows(rank, world_size)
        skipped = int(np.searchsorted(self.skip, stop) - np.searchsorted(self.skip, start))
        n, d = stop - start - skipped, len(self.layout.feature_names)
        X, y = np.empty((n, d), np.float32), np.empty(n, np.int64)
        scaler, at, self.groups_read = AffineScaler.from_dict(self.scaler), 0, []
        for i, first, table in self.layout.indexed_groups(self.layout.group_span(start, stop)):
            self.groups_read.append(i)
            lo, hi = max(start, first), min(stop, first + table.num_rows)
            X_group, y_group = self.layout.arrays(table.slice(lo - first, hi - lo))
            keep = ~np.isin(np.arange(lo, hi), self.skip, assume_unique=True)
            k = int(keep.sum())
            X[at : at + k] = scaler.transform(X_group[keep])
            y[at : at + k] = y_group[keep]
            at += k
        return X, y


class ValidationRows:
    """`config["validation"]` for `train_loop`: (X scaled, y) of `rows`, read from the table
    where they are used (on each worker, once) instead of travelling inside every config.
    Unpacks like the tuple it stands for."""

    def __init__(self, layout: ParquetLayout, scaler: dict, rows: np.ndarray):
        self.layout, self.scaler = layout, scaler
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            X, y = read_rows(self.layout, self.rows)
            self._arrays = (AffineScaler.from_dict(self.scaler).transform(X), y)
        return self._arrays

    def __iter__(self):
        return iter(self.arrays())

    def __getitem__(self, i: int) -> np.ndarray:
        return self.arrays()[i]

    def __len__(self) -> int:
        return 2

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # a reference travels, never the rows
