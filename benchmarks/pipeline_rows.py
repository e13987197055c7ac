"""What the retraining flow costs as the table grows: time per task and peak memory.

    .venv/bin/python benchmarks/pipeline_rows.py --rows 1000000 4000000 [--s3] [--json out.json]

For each size N it generates an N-row table of 20 float32 features as four Parquet
files (normals on a 4-dimensional manifold plus noise, about 1% labelled anomalies
off it), then, each in a fresh process so that peaks never mix, runs
`flows.retrain.retrain(data_url, storage_url, trials=0, epochs=1, workers=1, refit=False)` on
local storage (and, with `--s3`, on moto's S3 server in a child process,
`ede.bench.score_io.loopback_s3`), and reports:

- wall time of the flow and of each task (Prefect's task runs), and the rest
  (Ray's start, the flow's own work);
- `ESAD(...).fit` in process on the same fit rows, same configuration and one
  torch thread (the Ray worker's), after the flow in the local run's process;
- the driver's peak RSS (VmHWM of the process running the flow; and its peak
  within each task's window) and the peak of RSS summed over that process and all
  its descendants (Ray's head processes and workers, Prefect's temporary server),
  read from /proc every 0.2 s, minus the same sum just before the flow started.
  Summed RSS counts a shared page once per process that maps it, so it overstates
  the memory in use; the summed PSS (shared pages split among their users) is
  reported beside it;
- Prefect's start-up (the flow call to the flow run's start, Prefect's API) and Ray's
  (the flow's `cluster.connect`), measured in the same run, and the issue's limit:
  1.5 x the in-process fit + both start-ups;
- the ratios: flow wall / in-process fit, flow wall / that limit, peaks / raw float32 size, and the
  growth of each peak between the smallest and the largest size.

Every step of the flow runs in a Ray task (`ede.pipeline.steps`), so the driver's
peak is Prefect's and Ray's client's; the report lists which of torch, onnxruntime
and onnx the driver imported (none, by design).

The table is generated in this (parent) process, chunk by chunk, and the S3
server is this process's child too, so neither counts in the measured tree. The
library never imports this script (nor `flows`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proc_memory import TreeSampler, vm_hwm  # noqa: E402 (a sibling script)

REPO = Path(__file__).resolve().parent.parent
FEATURES, FILES, LATENT = 20, 4, 4
ANOMALY_SHARE = 0.01
CHUNK = 250_000
GIB = 1024**3


# ----------------------------------------------------------------------------- data


def generate(folder: Path, rows: int, seed: int = 0) -> list[Path]:
    """FILES Parquet files of `rows` rows in all, written chunk by chunk (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(LATENT, FEATURES))
    folder.mkdir(parents=True, exist_ok=True)
    paths, per_file = [], -(-rows // FILES)
    for k in range(FILES):
        n_file = min(per_file, rows - k * per_file)
        path = folder / f"part-{k}.parquet"
        writer = None
        for start in range(0, n_file, CHUNK):
            n = min(CHUNK, n_file - start)
            z = rng.normal(size=(n, LATENT))
            X = np.tanh(z @ mixing) + rng.normal(scale=0.05, size=(n, FEATURES))
            y = (rng.random(n) < ANOMALY_SHARE).astype(np.int64)
            off = rng.normal(scale=0.7, size=(int(y.sum()), FEATURES))
            X[y == 1] = np.tanh(rng.normal(size=(int(y.sum()), LATENT)) @ mixing) + off
            cols = {f"f{j}": X[:, j].astype(np.float32) for j in range(FEATURES)}
            table = pa.table({**cols, "label": y})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=65_536)
        writer.close()
        paths.append(path)
    return paths


def upload(paths: list[Path], prefix: str) -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(prefix.split("/", 1)[0])
    for p in paths:
        fs.put_file(str(p), f"{prefix}/{p.name}")


# ----------------------------------------------------------------------------- child


def task_windows(flow_run_id) -> dict[str, tuple[float, float]]:
    """(start, end) unix times of each task of one flow run, from Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    out: dict[str, tuple[float, float]] = {}
    for r in sorted(runs, key=lambda r: r.start_time or r.expected_start_time):
        if r.start_time is None or r.end_time is None:
            continue
        name = r.name.rsplit("-", 1)[0]  # "ingest-0ab" -> "ingest"
        out[name] = (r.start_time.timestamp(), r.end_time.timestamp())
    return out


def flow_started(flow_run_id) -> float:
    """Unix time the flow run began (after Prefect's temporary server came up)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).start_time.timestamp()


def timed_ray_start() -> list[float]:
    """Seconds each `cluster.connect` of the flow took (the flow's `ray_session` calls it)."""
    from ede.distributed import cluster

    seconds, connect = [], cluster.connect

    def timed(**kwargs):
        seconds.append(connect(**kwargs))
        return seconds[-1]

    cluster.connect = timed
    return seconds


def with_limit(report: dict) -> dict:
    """The issue's limit: 1.5 x the in-process fit plus Ray's and Prefect's start-up."""
    report["limit_s"] = 1.5 * report["fit_s"] + report["prefect_start_s"] + report["ray_start_s"]
    report["flow_wall_over_limit"] = report["flow_wall_s"] / report["limit_s"]
    report["flow_wall_over_fit"] = report["flow_wall_s"] / report["fit_s"]
    return report


def child(args: argparse.Namespace) -> None:
    import fsspec

    from flows.retrain import retrain  # the flow and everything it imports: the baseline

    ray_starts = timed_ray_start()
    with TreeSampler() as sampler:
        driver_before = sampler._rss_total()[3]
        called = time.time()
        started = time.perf_counter()
        state = retrain(
            args.data_url,
            args.storage_url,
            trials=0,
            epochs=args.epochs,
            workers=args.workers,
            refit=args.refit,
            return_state=True,
        )
        wall = time.perf_counter() - started
    summary = state.result()
    driver_peak = vm_hwm()
    driver_modules = sorted(m for m in ("torch", "onnxruntime", "onnx") if m in sys.modules)
    windows = task_windows(state.state_details.flow_run_id)
    tasks = {k: end - start for k, (start, end) in windows.items()}
    task_driver_peak = {k: sampler.driver_peak_between(*w) for k, w in windows.items()}
    fs, root = fsspec.core.url_to_fs(f"{args.storage_url.rstrip('/')}/prepared")
    fs.invalidate_cache()
    manifest_path = sorted(fs.glob(f"{root}/*/manifest.json"))[-1]
    manifest = json.loads(fs.cat_file(manifest_path))
    report = {
        "rows": args.rows,
        "storage": "s3" if args.storage_url.startswith("s3://") else "local",
        "refit": bool(args.refit),
        "features": FEATURES,
        "raw_float32_bytes": args.rows * FEATURES * 4,
        "data_bytes": args.data_bytes,
        "split_rows": manifest["rows"],
        "flow_wall_s": wall,
        "task_s": tasks,
        "untasked_s": wall - sum(tasks.values()),
        "prefect_start_s": flow_started(state.state_details.flow_run_id) - called,
        "ray_start_s": sum(ray_starts),
        "test_auroc": summary["test"].get("auroc"),
        "driver_baseline_bytes": driver_before,
        "driver_peak_bytes": driver_peak,
        "tree_baseline_bytes": sampler.baseline,
        "tree_peak_bytes": sampler.peak_total,
        "tree_peak_above_baseline_bytes": sampler.peak_total - sampler.baseline,
        "tree_peak_by_kind_bytes": sampler.peak_by_kind,
        "tree_peak_processes": sampler.peak_processes,
        "tree_pss_baseline_bytes": sampler.baseline_pss,
        "tree_pss_peak_above_baseline_bytes": sampler.peak_pss - sampler.baseline_pss,
        "driver_rss_peak_in_task_bytes": task_driver_peak,
        "driver_imported": driver_modules,  # of torch, onnxruntime, onnx: none, by design
    }
    if args.fit:
        report.update(in_process_fit(manifest_path, fs, manifest, args.epochs))
        with_limit(report)
    Path(args.out).write_text(json.dumps(report, indent=2))


def in_process_fit(manifest_path: str, fs, manifest: dict, epochs: int) -> dict:
    """`ESAD.fit` of the flow's model configuration on the flow's fit rows, in process."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from ede.pipeline.settings import base_estimator

    train = manifest_path.rsplit("/", 1)[0] + "/train.parquet"
    with fs.open(train, "rb") as f:
        table = pq.read_table(f).slice(0, manifest["rows"]["fit"])
    names, label = manifest["feature_names"], manifest["label_column"]
    X = np.column_stack([table.column(c).to_numpy() for c in names]).astype(np.float32)
    y = table.column(label).to_numpy().astype(np.int64)
    del table
    torch.set_num_threads(1)  # the Ray worker's setting
    det = base_estimator(seed=0, batch_size=256, epochs=epochs)
    started = time.perf_counter()
    det.fit(X, y)
    return {"fit_s": time.perf_counter() - started, "fit_rows": len(X)}


# ----------------------------------------------------------------------------- parent


def run_child(data_url: str, storage_url: str, rows: int, data_bytes: int, args, fit: bool,
              tmp: Path) -> dict:  # fmt: skip
    out = tmp / f"report-{rows}-{'s3' if storage_url.startswith('s3') else 'local'}.json"
    (tmp / "ray").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a busy, pinned core
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
        "OMP_NUM_THREADS": "1",
        "RAY_TMPDIR": str(tmp / "ray"),  # this run's Ray session files, apart from others'
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    cmd = [sys.executable, __file__, "--child", "--data-url", data_url, "--storage-url",
           storage_url, "--rows", str(rows), "--data-bytes", str(data_bytes), "--epochs",
           str(args.epochs), "--workers", str(args.workers), "--out", str(out)]  # fmt: skip
    if fit:
        cmd.append("--fit")
    if args.refit:
        cmd.append("--refit")
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    return json.loads(out.read_text())


def parent(args: argparse.Namespace) -> list[dict]:
    from ede.bench.score_io import loopback_s3

    reports = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="edeb-") as name:  # short: Ray's sockets
            tmp = Path(name)
            t = time.perf_counter()
            paths = generate(tmp / "data", rows)
            size = sum(p.stat().st_size for p in paths)
            print(f"[{rows} rows] generated {size / 1e6:.0f} MB in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
            reports.append(
                run_child(str(tmp / "data"), str(tmp / "store"), rows, size, args, True, tmp)
            )
            print(markdown(reports[-1:]), flush=True)
            if args.s3:
                with loopback_s3():
                    bucket = f"bench-{rows}"
                    upload(paths, f"{bucket}/data")
                    reports.append(run_child(f"s3://{bucket}/data", f"s3://{bucket}/store",
                                             rows, size, args, False, tmp))  # fmt: skip
                local, remote = reports[-2], reports[-1]  # the same rows: one in-process fit
                remote["fit_s"], remote["fit_rows"] = local["fit_s"], local["fit_rows"]
                with_limit(remote)
                print(markdown(reports[-1:]), flush=True)
    return reports


def growth(reports: list[dict]) -> dict:
    """Largest over smallest size, per storage: driver peak, tree peak above baseline."""
    out = {}
    for storage in sorted({r["storage"] for r in reports}):
        rs = sorted((r for r in reports if r["storage"] == storage), key=lambda r: r["rows"])
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            out[storage] = {
                "rows": [lo["rows"], hi["rows"]],
                "driver_peak": hi["driver_peak_bytes"] / lo["driver_peak_bytes"],
                "tree_above_baseline": hi["tree_peak_above_baseline_bytes"]
                / max(lo["tree_peak_above_baseline_bytes"], 1),
                "flow_wall": hi["flow_wall_s"] / lo["flow_wall_s"],
            }
    return out


def markdown(reports: list[dict]) -> str:
    lines = [
        "| rows | storage | flow s | tasks s | in-process fit s | flow/fit | limit s (Prefect, "
        "Ray start s) | flow/limit | driver peak GiB | (x raw) | all procs above baseline GiB, "
        "RSS (x raw) | PSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        raw = r["raw_float32_bytes"]
        tasks = ", ".join(f"{k} {v:.1f}" for k, v in r["task_s"].items())
        fit = f"{r['fit_s']:.1f}" if "fit_s" in r else "-"
        ratio = f"{r['flow_wall_over_fit']:.2f}" if "fit_s" in r else "-"
        limit = (
            f"{r['limit_s']:.1f} ({r['prefect_start_s']:.1f}, {r['ray_start_s']:.1f})"
            if "limit_s" in r
            else "-"
        )
        over = f"{r['flow_wall_over_limit']:.2f}" if "limit_s" in r else "-"
        above = r["tree_peak_above_baseline_bytes"]
        lines.append(
            f"| {r['rows']:,} | {r['storage']} | {r['flow_wall_s']:.1f} | {tasks}; "
            f"rest {r['untasked_s']:.1f} | {fit} | {ratio} | {limit} | {over} "
            f"| {r['driver_peak_bytes'] / GIB:.2f} "
            f"| {r['driver_peak_bytes'] / raw:.2f} | {above / GIB:.2f} ({above / raw:.2f}) "
            f"| {r['tree_pss_peak_above_baseline_bytes'] / GIB:.2f} |"
        )
    for r in reports:
        peaks = r.get("driver_rss_peak_in_task_bytes", {})
        lines.append(
            f"driver RSS peak per task ({r['rows']:,}, {r['storage']}): "
            + ", ".join(f"{k} {v / GIB:.2f}" for k, v in peaks.items())
            + f" GiB (before the flow {r['driver_baseline_bytes'] / GIB:.2f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    p.add_argument("--s3", action="store_true", help="also run on a loopback S3 server")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", help="write every report here")
    p.add_argument(
        "--refit",
        action="store_true",
        help="the flow's default: refit on every training row too (off: one training on the "
        "fit rows, like for like with the in-process fit it is compared with)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fit", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--data-url", "--storage-url", "--out"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--data-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.rows = args.rows[0]
        child(args)
        return
    reports = parent(args)
    result = {"reports": reports, "growth": growth(reports)}
    print("\n" + markdown(reports))
    for storage, g in result["growth"].items():
        print(f"growth {storage} {g['rows'][0]:,} -> {g['rows'][1]:,} rows: driver peak "
              f"x{g['driver_peak']:.2f}, all processes above baseline "
              f"x{g['tree_above_baseline']:.2f}, flow wall x{g['flow_wall']:.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
