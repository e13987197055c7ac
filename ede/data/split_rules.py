"""Which split each row of a prepared table joins, and how its rows fall into row groups:
the rules, from the label column alone, so that ingest can apply them in streamed passes.

**Split** (`assign_splits`): from the label column alone (1 byte a row), exactly the
rows `ede.data.protocol.validation_split` picks: per class a seeded permutation, test
carved first with `seed`, validation out of the rest with `seed + 1` (given splits:
validation out of `train/` with `seed`, unless `val/` is given), so every class with
at least 2 rows has rows on both sides of each cut.

**Row groups** (the rule; the manifest records it with the sizes). train.parquet holds
the F fit rows, then the V validation rows. The fit rows form N row groups, N the
smallest power of two that is at least ceil(F / G) and at least min(16, F // 1024),
with G = min(65,536, 16 MiB / (4 d)) rows (at least 1,024); group j holds rows
[floor(j F / N), floor((j + 1) F / N)). Ray Train's rank r of W reads the fit rows
[floor(r F / W), floor((r + 1) F / W)) (`ede.data.shards.ParquetShard`): exactly the
groups [r N / W, (r + 1) N / W) whenever W divides N, i.e. for every power of two up
to N (16 or more groups from 16,384 fit rows on); for any other W a worker shares at
most one group at each end with a neighbour. The validation rows follow in
ceil(V / G) groups of their own, so no group mixes fit and validation rows and no
training shard reads one; test.parquet is written in groups of at most G rows.
"""

from __future__ import annotations

import numpy as np

FIT, VALIDATION, TEST = 0, 1, 2
MAX_GROUP_ROWS, MIN_GROUP_ROWS, GROUP_BYTES, MIN_GROUPS = 65_536, 1_024, 16 << 20, 16
RULE = (
    "fit rows in N groups, N the smallest power of two >= max(ceil(F/G), min(16, F//1024)), "
    "group j = rows [floor(jF/N), floor((j+1)F/N)); validation rows in ceil(V/G) groups of "
    "their own; test in groups of at most G; G = max_group_rows"
)


def max_group_rows(d: int) -> int:
    return max(MIN_GROUP_ROWS, min(MAX_GROUP_ROWS, GROUP_BYTES // (4 * d)))


def fit_group_bounds(fit_rows: int, d: int) -> np.ndarray:
    """Row-group boundaries of the fit rows (N + 1 of them), by the rule above."""
    need = max(1, -(-fit_rows // max_group_rows(d)), min(MIN_GROUPS, fit_rows // MIN_GROUP_ROWS))
    n = 1 << (need - 1).bit_length()
    return np.arange(n + 1, dtype=np.int64) * fit_rows // n


def even_bounds(rows: int, most: int) -> np.ndarray:
    n = max(1, -(-rows // most))
    return np.arange(n + 1, dtype=np.int64) * rows // n


def carve(y: np.ndarray, fraction: float, seed: int, parts: str) -> np.ndarray:
    """Sorted indices of the carved part: `validation_split`'s rows, from labels alone."""
    rng = np.random.default_rng(seed)
    carved, kept = [], 0
    for label in (0, 1):
        idx = _where(y, label)
        rng.shuffle(idx)  # == rng.permutation(idx), in place
        n = int(round(fraction * len(idx)))
        n = min(max(n, 1), len(idx) - 1) if len(idx) >= 2 else 0
        carved.append(np.sort(idx[:n]))
        kept += len(idx) - n
        del idx
    out = np.sort(np.concatenate(carved))
    if len(out) == 0 or kept == 0:
        raise ValueError(
            f"cannot split {len(y)} row(s) into {parts} parts; need at least 2 rows of one class"
        )
    return out


def assign_splits(labels: dict[str, np.ndarray], given: bool, s) -> np.ndarray:
    """FIT, VALIDATION or TEST per row, rows in part order (train, val, test when given)."""
    if not given:
        y = labels["all"]
        codes = np.zeros(len(y), dtype=np.int8)
        codes[carve(y, s.test_fraction, s.seed, "train and test")] = TEST
        rest = codes != TEST
        val = carve(y[rest], s.validation_fraction, s.seed + 1, "fit and validation")
        _mark(codes, rest, val, VALIDATION)
        return codes
    train = np.zeros(len(labels["train"]), dtype=np.int8)
    if "val" not in labels:
        train[carve(labels["train"], s.validation_fraction, s.seed, "fit and validation")] = 1
    parts = [train]
    if "val" in labels:
        parts.append(np.full(len(labels["val"]), VALIDATION, dtype=np.int8))
    parts.append(np.full(len(labels["test"]), TEST, dtype=np.int8))
    return np.concatenate(parts)


def unlabelled_fit_rows(codes: np.ndarray, y: np.ndarray) -> int:
    return sum(
        int(((codes[a : a + CHUNK] == FIT) & (y[a : a + CHUNK] == 0)).sum())
        for a in range(0, len(codes), CHUNK)
    )


def fit_positions(codes: np.ndarray, seed: int) -> np.ndarray:
    """Where the k-th fit row (input order) lands in train.parquet: the inverse of numpy's
    seeded permutation of the fit rows, in 4 bytes a row."""
    n = sum(int((codes[a : a + CHUNK] == FIT).sum()) for a in range(0, len(codes), CHUNK))
    dtype = np.int32 if n < 2**31 else np.int64
    order = np.arange(n, dtype=dtype)
    np.random.default_rng(seed).shuffle(order)  # == rng.permutation(n)
    pos = np.empty(n, dtype=dtype)
    for a in range(0, n, CHUNK):
        pos[order[a : a + CHUNK]] = np.arange(a, min(a + CHUNK, n), dtype=dtype)
    return pos


CHUNK = 1 << 18  # rows per step of the label-only passes: their temporaries stay small


def _where(y: np.ndarray, label: int) -> np.ndarray:
    """np.flatnonzero(y == label) in int32 (int64 past 2**31 rows), chunk by chunk."""
    dtype = np.int32 if len(y) < 2**31 else np.int64
    n = sum(int((y[a : a + CHUNK] == label).sum()) for a in range(0, len(y), CHUNK))
    out, at = np.empty(n, dtype=dtype), 0
    for a in range(0, len(y), CHUNK):
        idx = np.flatnonzero(y[a : a + CHUNK] == label) + a
        out[at : at + len(idx)] = idx
        at += len(idx)
    return out


def _mark(codes: np.ndarray, among: np.ndarray, local: np.ndarray, code: int) -> None:
    """codes[k-th True of `among` for k in sorted `local`] = code, chunk by chunk."""
    seen = 0
    for a in range(0, len(codes), CHUNK):
        rows = np.flatnonzero(among[a : a + CHUNK])
        lo, hi = np.searchsorted(local, [seen, seen + len(rows)])
        codes[a + rows[local[lo:hi] - seen]] = code
        seen += len(rows)
