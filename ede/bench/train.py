"""`ede bench train`: what bf16 and Ray Train cost per epoch against the fp32 in-process loop.

Runs of the same training (same split, scaler, global batch, seed, epochs):
(a) `train_loop` in this process in fp32, (a') the same in bf16 autocast (`precision`),
(b) TorchTrainer with 1 worker, (c) with 2 workers (both fp32; `ray=False` skips them);
then (a) and (a') for the image defaults (the conv net over its whole `image_max_steps`
budget) on one 28x28 task of `ede bench images` (`images=False` skips them), so the
precision default is judged on both kinds of model.
Each epoch is stamped when it reports; the per-epoch time is the median gap after
`warmup` epochs, so Ray's start-up and teardown are counted apart. (a) and (a') run
alternately, epoch by epoch in `ROUNDS` repetitions, so a load burst on the shared
machine hits both; the best repetition's median counts. The GEMM limits of this core
(`ede.bench.roofline`) are measured in the same run, beside them: they say whether
bf16 can gain here at all (native bf16 or an emulation hundreds of times slower).
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ede.bench import roofline
from ede.bench.image_data import one_vs_rest
from ede.bench.images import N_ANOMALY, N_NORMAL
from ede.bench.odds import load_npz
from ede.core.estimator import ESAD, SCALERS
from ede.core.precision import resolve
from ede.core.training import ArrayShard, LocalRuntime, train_loop
from ede.data.protocol import semi_supervised_split, validation_split
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
    ray: bool = True,
    images: bool = True,
    image_normals: int = N_NORMAL,
    image_max_steps: int = ESAD().image_max_steps,
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
        "bf16_native": resolve("auto", torch.device("cpu")) == "bf16",
        "runs": {},
    }
    log("GEMM limits of this core")
    report["peaks"] = roofline.peaks(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/{dataset}.parquet"
        names = [f"f{i}" for i in range(X.shape[1])]
        frame = pd.DataFrame(split.X_train, columns=names)
        frame["label"] = split.y_train
        write_table(frame, url)
        data = dt.prepare_data(url, validation_fraction=0.2, seed=0)
        config = data.worker_config(det)

        keep = np.setdiff1d(np.arange(len(split.y_train)), data.val_rows)
        Xs = data.scaler.transform(split.X_train[keep])
        local = {**config, "data": ArrayShard(Xs, split.y_train[keep])}
        report["runs"] = _precisions(local, warmup, ROUNDS, log)
        if images:
            anomalies = max(10, image_normals * N_ANOMALY // N_NORMAL)  # the bench's share
            report["images"] = image_precision(
                n_normal=image_normals,
                n_anomaly=anomalies,
                image_max_steps=image_max_steps,
                log=log,
            )
        if not ray:
            report["ray_startup_s"] = None
            return _finish(report, det, data)

        report["ray_startup_s"] = cluster.connect()
        for key, workers in (("b_ray_1_worker", 1), ("c_ray_2_workers", 2)):
            log(f"({key[0]}) TorchTrainer, {workers} worker(s), {epochs} epochs")
            scaling = cluster.Scaling(workers=workers, cpus_per_worker=1.0)
            run_spec = dt.RunSpec(f"{tmp}/ray", name=f"bench-{key}", keep_checkpoints=1)
            start = time.perf_counter()
            fitted, _ = dt.fit_distributed(ESAD(**det.get_params()), data, scaling, run_spec)
            report["runs"][key] = _summary(fitted.history_, warmup, time.perf_counter() - start)
    return _finish(report, det, data)


ROUNDS = 2  # repetitions of the fp32/bf16 pair; the best of each counts
IMAGE_ROUNDS = 1  # an image run is the whole budget (tens of seconds): one pair
IMAGE_TASK = 0  # the normal digit of the image task (the defaults were chosen on 1, 4, 7)


RUN_KEYS = {"fp32": "a_in_process", "bf16": "a_in_process_bf16"}  # (a) and (a')
PRECISIONS = tuple(RUN_KEYS)


def _precisions(
    config: dict, warmup: int, rounds: int, log, precisions: tuple[str, ...] = PRECISIONS
) -> dict:
    """Runs of `config` at each of `precisions` ((a) fp32 and (a') bf16), alternating,
    the best repetition of each."""
    runs: dict = {}
    for r in range(rounds):
        for precision in precisions:
            key = RUN_KEYS[precision]
            log(f"({key}) in-process, {precision}, round {r + 1}")
            run_config = {**config, "train": {**config["train"], "precision": precision}}
            runtime = _StampedRuntime()
            start = time.perf_counter()
            train_loop(run_config, runtime)
            got = _summary(runtime.history, warmup, time.perf_counter() - start)
            best = runs.get(key)
            if best is None or got["epoch_s_median"] < best["epoch_s_median"]:
                runs[key] = {**got, "precision": precision, "epochs": len(runtime.history)}
    return runs


def image_precision(
    *,
    n_normal: int = N_NORMAL,
    n_anomaly: int = N_ANOMALY,
    image_max_steps: int | None = ESAD().image_max_steps,
    warmup: int = 2,
    precisions: tuple[str, ...] = PRECISIONS,
    log=print,
) -> dict:
    """fp32 against bf16 for the image defaults: `ESAD(seed=0)`'s conv net and image
    budget (`image_max_steps`: another budget, for quick checks) on the 28x28 task of
    digit IMAGE_TASK, validation carved from its training set as `ede tune` carves it
    (the test images are never scored). `precisions`: fewer, e.g. fp32 alone."""
    X, y = one_vs_rest(IMAGE_TASK, n_normal, n_anomaly, seed=0)
    split = semi_supervised_split(X, y, seed=0)
    X_fit, y_fit, X_val, y_val = validation_split(split.X_train, split.y_train, seed=0)
    det = ESAD(seed=0, image_max_steps=image_max_steps)
    scaler = SCALERS[det.scaling]().fit(X_fit)
    config = {
        "net": asdict(det.net_config(X.shape[1:])),
        "train": asdict(det.train_config(image=True)),
        "data": ArrayShard(scaler.transform(X_fit), y_fit),
        "validation": (scaler.transform(X_val), y_val),
    }
    runs = _precisions(config, warmup, IMAGE_ROUNDS, log, precisions)
    report = {
        "task": f"digit {IMAGE_TASK}",
        "fit_images": len(y_fit),
        "config": {"net": config["net"], "train": config["train"]},
        "runs": runs,
    }
    if set(RUN_KEYS.values()) <= set(runs):
        report["bf16_vs_fp32"] = _bf16_vs_fp32(runs)
    return report


def _bf16_vs_fp32(runs: dict) -> dict:
    fp32, bf16 = runs["a_in_process"], runs["a_in_process_bf16"]
    return {
        "epoch_time_ratio": bf16["epoch_s_median"] / fp32["epoch_s_median"],
        "val_auroc_change_points": 100 * (bf16["final_val_auroc"] - fp32["final_val_auroc"]),
    }


def _finish(report: dict, det: ESAD, data) -> dict:
    runs = report["runs"]
    base = runs["a_in_process"]["epoch_s_median"]
    for run_ in runs.values():
        run_["ratio_to_a"] = run_["epoch_s_median"] / base
    report["bf16_vs_fp32"] = _bf16_vs_fp32(runs)
    report["config"] = {"train": asdict(det.train_config()), "fit_rows": data.fit_rows}
    report["load_average_1min"] = os.getloadavg()[0]
    return report


def markdown(report: dict) -> str:
    lines = [
        f"{report['dataset']}: median epoch time after {report['warmup']} warm-up epochs "
        f"({report['torch_threads_per_process']} torch thread(s) per process); "
        + (
            f"Ray start-up {report['ray_startup_s']:.1f} s"
            if report["ray_startup_s"] is not None
            else "Ray runs skipped"
        )
        + f"; load average {report['load_average_1min']:.2f}",
        "",
        *roofline.limits_table(report["peaks"]),
        "",
        "| run | epoch s | ratio to (a) | run wall s | final val AUROC |",
        "|---|---|---|---|---|",
    ]
    for key, r in report["runs"].items():
        lines.append(
            f"| {key} | {r['epoch_s_median']:.3f} | {r['ratio_to_a']:.2f} | "
            f"{r['wall_s']:.1f} | {r['final_val_auroc']:.4f} |"
        )
    lines += ["", _bf16_line("bf16 vs fp32 in-process", report["bf16_vs_fp32"], report)]
    if "images" in report:
        im = report["images"]
        lines += [
            "",
            f"image defaults on {im['task']} ({im['fit_images']} fit images, 28x28, "
            f"{im['runs']['a_in_process']['epochs']} epochs: the whole image budget)",
            "",
            "| run | epoch s | run wall s | final val AUROC |",
            "|---|---|---|---|",
            *[
                f"| {key} | {r['epoch_s_median']:.3f} | {r['wall_s']:.1f} | "
                f"{r['final_val_auroc']:.4f} |"
                for key, r in im["runs"].items()
            ],
            "",
            _bf16_line("images: bf16 vs fp32", im["bf16_vs_fp32"], report),
        ]
    return "\n".join(lines)


def _bf16_line(label: str, b: dict, report: dict) -> str:
    native = "yes" if report["bf16_native"] else "no"
    return (
        f"{label}: epoch time x{b['epoch_time_ratio']:.2f}, final val AUROC "
        f"{b['val_auroc_change_points']:+.2f} points (precision='auto' picks bf16 on this "
        f"CPU: {native})"
    )
