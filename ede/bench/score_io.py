"""`ede bench score`'s storage half: scoring end to end from a loopback S3 server, and
the scorer's peak memory in fresh processes.

`s3_at_scale` (`ede bench score --s3`) scores many generated rows from that server and a
tenth of them, so peak RSS shows as a ratio that batch size bounds, not input size.

`loopback_s3` runs moto's S3 server in a child process, so its request handling
does not share this process's GIL with the scorer being measured.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILES, ROW_GROUP = 4, 65536
# Memory runs read 8192-row batches: the scorer holds about six batches in flight, so
# at the default 65536 a 1x run of 200k rows would end before its queues fill, and the
# 10x run would show the queues filling, not growth with data (measured: 1M and 3M rows
# at 65536 peak at the same 325 MB).
RSS_BATCH = 8192


@contextlib.contextmanager
def loopback_s3() -> Iterator[str]:
    """moto's S3 server in a child process; AWS_* set for this process while it runs."""
    code = (
        "from moto.server import ThreadedMotoServer; import time; "
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0); s.start(); "
        "print('PORT', s.get_host_and_port()[1], flush=True); time.sleep(86400)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    saved = {k: os.environ.get(k) for k in _AWS}
    try:
        line = ""
        while not line.startswith("PORT"):
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the loopback S3 server did not start")
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{line.split()[1]}",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        yield os.environ["AWS_ENDPOINT_URL"]
    finally:
        proc.kill()
        proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _table(X: np.ndarray, y: np.ndarray, first: int = 0) -> pa.Table:
    cols = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    return pa.table({"row_id": np.arange(first, first + len(X)), **cols, "label": y})


def end_to_end(folder: str, X: np.ndarray, y: np.ndarray, threads: int) -> dict:
    import pyarrow.dataset as ds
    import s3fs

    from ede.data.listing import arrow_fs
    from ede.scoring.batch import score

    with loopback_s3():
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        table = _table(X, y)
        step = -(-len(X) // FILES)
        for k in range(FILES):
            with fs.open(f"bench/in/part{k}.parquet", "wb") as f:
                pq.write_table(table.slice(k * step, step), f, row_group_size=ROW_GROUP)
        afs, _, _ = arrow_fs("s3://bench/in/")
        paths = [f"bench/in/part{k}.parquet" for k in range(FILES)]
        start = time.perf_counter()
        rows = sum(b.num_rows for b in ds.dataset(paths, filesystem=afs).to_batches())
        read = rows / (time.perf_counter() - start)
        summary = score(
            folder, "s3://bench/in/", "s3://bench/out/", threads=threads, warn=lambda _: None
        )
        s3fs.S3FileSystem.clear_instance_cache()
    return {
        "files": FILES,
        "rows": rows,
        "plain_read_rows_per_s": read,
        "score_rows_per_s": summary.rows_per_second,
        "ratio": summary.rows_per_second / read,
    }


def s3_at_scale(
    folder: str,
    chunks: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    rows: int,
    batch_size: int,
    log: Callable[[str], None],
) -> dict:
    """`ede score` from the loopback S3 server on `rows` rows (FILES Parquet files) and on
    a tenth of them (one file), each in a fresh process (input, model and output all on
    the server): rows/s and peak RSS. `chunks(part, n)` makes the part-th `n` rows, so
    the table is written chunk by chunk and never held whole here."""
    import s3fs

    n1 = max(rows // 10, 1)
    step = -(-rows // FILES)
    out = {"rows_1x": n1, "rows_10x": rows, "files_10x": FILES, "batch_size": batch_size}
    with loopback_s3():
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        fs.put(f"{folder.rstrip('/')}/", "bench/model/", recursive=True)
        start, part = time.perf_counter(), 0
        layout = [("small/part0.parquet", n1)]
        layout += [(f"big/part{k}.parquet", min(step, rows - k * step)) for k in range(FILES)]
        for key, n in layout:
            with fs.open(f"bench/{key}", "wb") as f:
                writer = None
                for first in range(0, n, ROW_GROUP * 4):
                    X, y = chunks(part, min(ROW_GROUP * 4, n - first))
                    table = _table(X, y, first)
                    writer = writer or pq.ParquetWriter(f, table.schema)
                    writer.write_table(table, row_group_size=ROW_GROUP)
                    part += 1
                writer.close()
        log(f"wrote {n1 + rows:,} rows to loopback S3 in {time.perf_counter() - start:.0f} s")
        for key, url in (("1x", "s3://bench/small/"), ("10x", "s3://bench/big/")):
            log(f"scoring {out[f'rows_{key}']:,} rows from {url} in a fresh process")
            args = ("s3://bench/model", url, f"s3://bench/out-{key}/", str(batch_size))
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True
            )
            if done.returncode:
                raise RuntimeError(f"the scorer failed: {done.stderr.strip()[-2000:]}")
            rate, rss = done.stdout.split()[-2:]
            out[f"rows_per_s_{key}"] = float(rate)
            out[f"rss_{key}_mb"] = int(rss) / 1024
        s3fs.S3FileSystem.clear_instance_cache()
    out["ratio"] = out["rss_10x_mb"] / out["rss_1x_mb"]
    return out


# Peak RSS from /proc's VmHWM: ru_maxrss survives exec, so a child forked from this
# (large) process would report this process's size.
_CHILD = """
import resource, sys
from ede.scoring.batch import score  # onnxruntime and pyarrow only: ede/__init__ is lazy
if sys.argv[1] != "-":
    model, table, out, batch = sys.argv[1:5]
    s = score(model, table, out, batch_size=int(batch), overwrite=True, warn=lambda _: None)
    print(s.rows_per_second)
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    print(int(status.split()[0]))
except OSError:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(folder: str, X: np.ndarray, y: np.ndarray, tmp: Path) -> dict:
    """Peak RSS (MB) of a fresh scorer process: import only, 1x rows, 10x rows (one file)."""
    n1 = max(len(X) // 10, 1)
    table = _table(X, y)
    out = {"rows_1x": n1, "rows_10x": 10 * n1, "batch_size": RSS_BATCH}
    for key, n in (("1x", n1), ("10x", 10 * n1)):
        pq.write_table(table.slice(0, n), tmp / f"{key}.parquet", row_group_size=ROW_GROUP)
    runs = {"import_only": ("-", "-", "-", "-")}
    for key in ("1x", "10x"):
        runs[key] = (folder, str(tmp / f"{key}.parquet"), str(tmp / f"out{key}"), str(RSS_BATCH))
    for key, args in runs.items():
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True
        )
        out[f"rss_{key}_mb"] = int(done.stdout.split()[-1]) / 1024
    out["ratio"] = out["rss_10x_mb"] / out["rss_1x_mb"]
    return out
