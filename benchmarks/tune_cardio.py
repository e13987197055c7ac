"""The issue's search figure: a 4-trial ASHA search on cardio, 2 trials at a time.

Writes cardio's training split (Deep SAD's protocol, seed 0; the test rows stay out)
as Parquet, runs `ede.distributed.tuning.search` on a fresh local Ray, and reports
the wall time of the search (Ray start-up apart) and the peak memory in use on the
machine (all Ray processes included) sampled every 0.2 s.

    python benchmarks/tune_cardio.py --data-dir ../shared/data/odds --json tune-cardio.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from ede.bench.odds import load_npz
from ede.core.estimator import ESAD
from ede.data.protocol import semi_supervised_split
from ede.data.tables import write_table
from ede.distributed import cluster, tuning


def _peak_memory(stop: threading.Event, out: dict) -> None:
    base = psutil.virtual_memory().used
    out["baseline_gib"] = base / 2**30
    peak = base
    while not stop.wait(0.2):
        peak = max(peak, psutil.virtual_memory().used)
    out["peak_used_gib"] = peak / 2**30
    out["peak_over_baseline_gib"] = (peak - base) / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--searcher", default="asha")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    X, y = load_npz(Path(args.data_dir) / "cardio.npz")
    split = semi_supervised_split(X, y, seed=0)
    memory: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_peak_memory, args=(stop, memory), daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.DataFrame(split.X_train, columns=[f"f{i}" for i in range(X.shape[1])])
        frame["label"] = split.y_train
        url = f"{tmp}/cardio.parquet"
        write_table(frame, url)
        startup = cluster.connect()
        spec = tuning.SearchSpec(
            trials=args.trials, epochs=args.epochs, searcher=args.searcher, max_concurrent=2
        )
        scaling = cluster.Scaling(workers=1, cpus_per_worker=0.5)
        start = time.perf_counter()
        out = tuning.search(ESAD(seed=0), url, cluster.storage_path(f"{tmp}/ray"), spec, scaling)
        wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    report = {
        "ray_startup_s": startup,
        "search_wall_s": wall,
        "memory": memory,
        "epochs": args.epochs,
        "trials": out.table.drop(columns=["checkpoint"]).to_dict(orient="records"),
        "best": {"trial": out.best_trial, "val_auroc": out.best_val_auroc, **out.best_params},
    }
    print(out.table[["trial_id", "status", "epochs_done", "final_val_auroc", "wall_s"]])
    print(
        f"search (4 trials, 2 concurrent, refit included): {wall:.1f} s; Ray start-up "
        f"{startup:.1f} s; peak memory in use {memory['peak_used_gib']:.2f} GiB "
        f"(+{memory['peak_over_baseline_gib']:.2f} GiB over the baseline)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
