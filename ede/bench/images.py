"""`ede bench images`: the conv model on 28x28 one-vs-rest digit tasks, beside its peers.

Each normal digit in turn makes one task (`ede.bench.image_data`): its images are normal,
the other nine digits anomalies, split by Deep SAD's protocol (`ede.data.protocol`, a
share gamma_l of the training set labelled anomalies, test disjoint). ESAD fits the
(n, 1, 28, 28) images with its defaults; the peers (`ede.bench.peers`: DeepOD's DeepSAD,
IsolationForest) fit the flattened images, scaled as in `ede bench odds`. Fit seconds
are wall time of fit and test scoring together (the peers' interface is fit-and-score;
scoring is a few seconds of it); fit CPU seconds, this process's core time over the same
span, show what a shared core took from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ede.bench.image_data import one_vs_rest
from ede.bench.odds import fit_score_esad, progress_line, result_row
from ede.bench.peers import PEERS
from ede.core.scaling import AffineScaler
from ede.data.protocol import semi_supervised_split

METHODS = ("esad", "deepsad_deepod", "iforest")
# 8,000 normals give 4,800 training normals and, at gamma_l 0.05, 252 labelled anomalies:
# just over 5,000 training images, the size the issue asks a fit to handle.
N_NORMAL = 8000
N_ANOMALY = 2000


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


def run_images(
    tasks=None,
    seeds: int = 1,
    gamma_l: float = 0.05,
    methods=METHODS,
    n_normal: int = N_NORMAL,
    n_anomaly: int = N_ANOMALY,
    log: Callable[[str], None] = print,
) -> dict:
    tasks = list(range(10)) if tasks is None else [int(t) for t in tasks]
    unknown = [m for m in methods if m != "esad" and m not in PEERS]
    if unknown or not set(tasks) <= set(range(10)):
        raise ValueError(f"unknown method(s) {unknown} or digit(s) in {tasks}")
    results = []
    for normal in tasks:
        for seed in range(seeds):
            X, y = one_vs_rest(normal, n_normal, n_anomaly, seed)
            split = semi_supervised_split(X, y, seed=seed, gamma_l=gamma_l)
            results += score_task(f"digit {normal}", seed, split, methods, log)
    return {
        "protocol": {
            "data": "sklearn digits, deformed onto 28x28 (ede.bench.image_data)",
            "n_normal": n_normal,
            "n_anomaly": n_anomaly,
            "train_images": int(len(split.y_train)),
            "gamma_l": gamma_l,
            "seeds": seeds,
            "tasks": tasks,
            "methods": list(methods),
            "torch_threads": torch.get_num_threads(),
        },
        "results": results,
        "mean": summary(results, methods),
    }


def score_task(name: str, seed: int, split, methods, log) -> list[dict]:
    """One row per method; ESAD on the images, the peers on flattened, scaled ones."""
    scaler = AffineScaler().fit(_flat(split.X_train))  # train rows only
    flat = scaler.transform(_flat(split.X_train)), scaler.transform(_flat(split.X_test))
    rows = []
    for method in methods:
        torch.manual_seed(seed)
        np.random.seed(seed)
        fit = fit_score_esad if method == "esad" else PEERS[method]
        X_tr, X_te = (split.X_train, split.X_test) if method == "esad" else flat
        start, cpu = time.perf_counter(), time.process_time()
        scores = fit(X_tr, split.y_train, X_te, seed=seed)
        rows.append(result_row(name, method, seed, time.perf_counter() - start, split, scores))
        rows[-1]["fit_cpu_seconds"] = time.process_time() - cpu  # this process's core time
        log(progress_line(rows[-1], split))
    return rows


def summary(results: list[dict], methods) -> dict:
    """Per method: mean AUROC/AUPRC over tasks and seeds, median fit seconds."""
    out = {}
    for m in methods:
        rows = [r for r in results if r["method"] == m]
        out[m] = {
            "auroc": float(np.mean([r["auroc"] for r in rows])),
            "auprc": float(np.mean([r["auprc"] for r in rows])),
            "fit_seconds_median": float(np.median([r["fit_seconds"] for r in rows])),
        }
    return out


def markdown(report: dict) -> str:
    """AUROC % and fit seconds per task and method (seeds averaged), then the means."""
    methods = report["protocol"]["methods"]
    rows = report["results"]
    head = ["task"] + [f"{m} AUROC % / fit s" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in dict.fromkeys(r["dataset"] for r in rows):
        cells = []
        for m in methods:
            mine = [r for r in rows if r["dataset"] == task and r["method"] == m]
            auroc = np.mean([r["auroc"] for r in mine])
            seconds = np.mean([r["fit_seconds"] for r in mine])
            cells.append(f"{100 * auroc:.1f} / {seconds:.0f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    mean = report["mean"]
    cells = [
        f"**{100 * mean[m]['auroc']:.1f}** / {mean[m]['fit_seconds_median']:.0f}" for m in methods
    ]
    lines.append("| mean (fit s: median) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
