"""`ede bench train`: what Ray Train costs per epoch against the in-process loop.

Three runs of the same training (same split, scaler, global batch, seed, epochs):
(a) `train_loop` in this process, (b) TorchTrainer with 1 worker, (c) with 2
workers. Each epoch is stamped when it reports; the per-epoch time is the median
gap after `warmup` epochs, so Ray's start-up and teardown are counted apart.
"""

from __future__ import annotations

import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ede.bench.odds import load_npz
from ede.core.estimator import ESAD
from ede.core.training import ArrayShard, LocalRuntime, train_loop
from ede.data.protocol import semi_supervised_split
from ede.data.tables import write_table


class _StampedRuntime(LocalRuntime):
    def report(self, metrics, state):
        super().report({**metrics, "timestamp": time.time()}, state)


def _epoch_times(history: list[dict], warmup: int) -> list[float]:
    stamps = [m["timestamp"] for m in history]
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]


def _summary(history: list[dict], warmup: int, wall_s: float) -> dict:
    times = _epoch_times(history, warmup)
    return {
        "epoch_s_median": float(np.median(times)) if times else math.nan,
        "epoch_s": times,
        "final_val_auroc": float(history[-1].get("val_auroc", math.nan)),
        "wall_s": wall_s,
    }


def run(
    data_dir: str,
    *,
    dataset: str = "shuttle",
    epochs: int = 6,
    warmup: int = 2,
    log: Callable[[str], None] = print,
) -> dict:
    from ede.distributed import cluster
    from ede.distributed import trainer as dt

    if epochs < warmup + 2:
        raise ValueError(f"epochs={epochs}: need at least warmup + 2 = {warmup + 2}")
    X, y = load_npz(Path(data_dir) / f"{dataset}.npz")
    split = semi_supervised_split(X, y, seed=0)
    det = ESAD(seed=0, epochs=epochs, min_steps=None, max_steps=None)
    report: dict = {
        "dataset": dataset,
        "epochs": epochs,
        "warmup": warmup,
        "torch_threads_per_process": torch.get_num_threads(),
        "platform": platform.platform(),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/{dataset}.parquet"
        names = [f"f{i}" for i in range(X.shape[1])]
        frame = pd.DataFrame(split.X_train, columns=names)
        frame["label"] = split.y_train
        write_table(frame, url)
        data = dt.prepare_data(url, validation_fraction=0.2, seed=0)
        config = data.worker_config(det)

        log(f"(a) in-process, {epochs} epochs")
        keep = np.setdiff1d(np.arange(len(split.y_train)), data.val_rows)
        Xs = data.scaler.transform(split.X_train[keep])
        local = {**config, "data": ArrayShard(Xs, split.y_train[keep])}
        runtime = _StampedRuntime()
        start = time.perf_counter()
        train_loop(local, runtime)
        report["runs"]["a_in_process"] = _summary(
            runtime.history, warmup, time.perf_counter() - start
        )

        report["ray_startup_s"] = cluster.connect()
        for key, workers in (("b_ray_1_worker", 1), ("c_ray_2_workers", 2)):
            log(f"({key[0]}) TorchTrainer, {workers} worker(s), {epochs} epochs")
            scaling = cluster.Scaling(workers=workers, cpus_per_worker=1.0)
            run_spec = dt.RunSpec(f"{tmp}/ray", name=f"bench-{key}", keep_checkpoints=1)
            start = time.perf_counter()
            fitted, _ = dt.fit_distributed(ESAD(**det.get_params()), data, scaling, run_spec)
            report["runs"][key] = _summary(fitted.history_, warmup, time.perf_counter() - start)
    base = report["runs"]["a_in_process"]["epoch_s_median"]
    for run_ in report["runs"].values():
        run_["ratio_to_a"] = run_["epoch_s_median"] / base
    report["config"] = {"train": asdict(det.train_config()), "fit_rows": data.fit_rows}
    return report


def markdown(report: dict) -> str:
    lines = [
        f"{report['dataset']}: median epoch time after {report['warmup']} warm-up epochs "
        f"({report['torch_threads_per_process']} torch thread(s) per process); "
        f"Ray start-up {report['ray_startup_s']:.1f} s",
        "",
        "| run | epoch s | ratio to (a) | run wall s | final val AUROC |",
        "|---|---|---|---|---|",
    ]
    for key, r in report["runs"].items():
        lines.append(
            f"| {key} | {r['epoch_s_median']:.3f} | {r['ratio_to_a']:.2f} | "
            f"{r['wall_s']:.1f} | {r['final_val_auroc']:.4f} |"
        )
    return "\n".join(lines)
