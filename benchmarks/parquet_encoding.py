"""pyarrow's default Parquet encoding against ede's (`ede.data.parquet_encoding`), side by side.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/parquet_encoding.py [--json OUT]

One table like the ones ede writes (float32 features on a low-dimensional manifold plus
noise, as `benchmarks/pipeline_rows.py` generates them, and an int64 label), written to
memory as one row group in each encoding, best of `--rounds`, then read back whole.
Prints write MB/s, file size over the raw bytes and read time for each, and the ratios
(default / ede). pyarrow is pinned to one thread so the two compare on one core.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ede.data.parquet_encoding import writer_options


def make_table(rows: int, features: int = 20, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(4, features))
    X = np.tanh(rng.normal(size=(rows, 4)) @ mixing) + rng.normal(scale=0.05, size=(rows, features))
    cols = {f"f{j}": X[:, j].astype(np.float32) for j in range(features)}
    return pa.table({**cols, "label": (rng.random(rows) < 0.01).astype(np.int64)})


def measure(table: pa.Table, options: dict, rounds: int) -> dict:
    write = float("inf")
    for _ in range(rounds):
        buf = io.BytesIO()
        started = time.perf_counter()
        with pq.ParquetWriter(buf, table.schema, **options) as writer:
            writer.write_table(table, row_group_size=table.num_rows)
        write = min(write, time.perf_counter() - started)
    data = buf.getvalue()
    read = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        pq.read_table(pa.BufferReader(data))
        read = min(read, time.perf_counter() - started)
    return {"write_s": write, "read_s": read, "bytes": len(data)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    table = make_table(args.rows)
    raw = table.nbytes
    results = {
        "pyarrow default": measure(table, {}, args.rounds),
        "ede": measure(table, writer_options(table.schema), args.rounds),
    }
    print(f"{args.rows:,} rows, {table.num_columns} columns, {raw / 1e6:.1f} MB raw, one thread")
    print("| encoding | write MB/s | size / raw | read ms |\n|---|---|---|---|")
    for name, r in results.items():
        mbs, size, ms = raw / r["write_s"] / 1e6, r["bytes"] / raw, r["read_s"] * 1e3
        print(f"| {name} | {mbs:.0f} | {size:.2f} | {ms:.0f} |")
    d, e = results["pyarrow default"], results["ede"]
    ratios = {
        "write_time": d["write_s"] / e["write_s"],
        "size": d["bytes"] / e["bytes"],
        "read_time": d["read_s"] / e["read_s"],
    }
    print("default / ede: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"rows": args.rows, "raw_bytes": raw, "results": results, "ratios": ratios},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
