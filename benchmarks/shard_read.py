"""A worker's shard read: `ParquetShard` against reading pieces and concatenating them.

`ParquetShard.__call__` scales row group by row group into arrays of the shard's size.
The peer is what it did before: every group's kept rows as pieces, their
concatenation, then the scaler over the whole shard (four shard-sized arrays at once).
Each is timed in a fresh process (so their peaks never mix) on the fit rows of a
generated table (`pipeline_rows.generate`, ingested by `ede.data.ingest.prepare_splits`),
one thread, and reports seconds and how far the read lifts the process's peak RSS
(above its peak before the read, set by preparing the data), side by side
(`benchmarks/results/shard_read.json`):

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/shard_read.py [--rows 4000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pipeline_rows import generate  # noqa: E402 (a sibling script)

GIB = 1024**3


def concatenated(shard, rank: int, world_size: int):
    """The peer: pieces, their concatenation, then one transform of the whole shard."""
    from ede.core.scaling import AffineScaler

    start, stop = shard.rows(rank, world_size)
    Xs, ys = [], []
    for _, first, table in shard.layout.indexed_groups(shard.layout.group_span(start, stop)):
        lo, hi = max(start, first), min(stop, first + table.num_rows)
        X, y = shard.layout.arrays(table.slice(lo - first, hi - lo))
        keep = ~np.isin(np.arange(lo, hi), shard.skip, assume_unique=True)
        Xs.append(X[keep])
        ys.append(y[keep])
    return AffineScaler.from_dict(shard.scaler).transform(np.concatenate(Xs)), np.concatenate(ys)


def read_once(train_url: str, variant: str) -> dict:
    from ede.data.shards import ParquetShard
    from ede.distributed.trainer import prepare_data

    data = prepare_data(train_url)
    shard = ParquetShard(data.layout, data.scaler.to_dict(), data.val_rows)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    X, y = concatenated(shard, 0, 1) if variant == "concatenated" else shard(0, 1)
    seconds = time.perf_counter() - started
    rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    checksum = float(X[:1000].astype(np.float64).sum())
    return {"variant": variant, "rows": len(X), "s": seconds, "peak_rise_bytes": rise,
            "shard_bytes": X.nbytes, "checksum": checksum}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--json")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(read_once(*args.child)))
        return
    from ede.data.ingest import SplitSettings, prepare_splits

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "data", args.rows)
        train_url = prepare_splits(f"{tmp}/data", f"{tmp}/store", SplitSettings()).train_url
        runs = []
        for variant in ("concatenated", "ParquetShard", "concatenated", "ParquetShard"):
            cmd = [sys.executable, __file__, "--child", train_url, variant]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    for r in runs:
        rise, size = r["peak_rise_bytes"] / GIB, r["shard_bytes"] / GIB
        print(f"{r['variant']:>12}: {r['rows']:,} rows in {r['s']:.2f} s, peak RSS rise "
              f"{rise:.2f} GiB (shard {size:.2f} GiB)")  # fmt: skip
    if len({r["checksum"] for r in runs}) != 1:
        sys.exit("the two reads disagree")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
