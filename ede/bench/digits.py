"""`ede bench digits`: the conv model on scikit-learn's 8x8 digits, one-vs-rest.

Each digit in turn is the normal class and the nine others are anomalies, with a
few of them labelled (Deep SAD's protocol, gamma_l of the training set). The data
ships with scikit-learn, so this runs anywhere without downloads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest

from ede.core.estimator import ESAD
from ede.core.metrics import evaluate
from ede.core.scaling import AffineScaler
from ede.data.protocol import semi_supervised_split


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return d.images[:, None].astype(np.float32), d.target  # (1797, 1, 8, 8), digit labels


def run_digits(
    seeds: int = 1, gamma_l: float = 0.05, log: Callable[[str], None] = print, **esad_params
) -> dict:
    X, digit = digits_images()
    results = []
    for normal in range(10):
        y = (digit != normal).astype(np.int64)
        for seed in range(seeds):
            split = semi_supervised_split(X, y, seed=seed, gamma_l=gamma_l)
            start = time.perf_counter()
            det = ESAD(seed=seed, **esad_params).fit(split.X_train, split.y_train)
            seconds = time.perf_counter() - start
            row = {"normal_digit": normal, "method": "esad", "seed": seed, "fit_seconds": seconds}
            row.update(evaluate(split.y_test, det.decision_function(split.X_test)))
            results.append(row)
            scaler = AffineScaler().fit(split.X_train.reshape(len(split.X_train), -1))
            iso = IsolationForest(random_state=seed).fit(
                scaler.transform(split.X_train.reshape(len(split.X_train), -1))
            )
            flat_test = scaler.transform(split.X_test.reshape(len(split.X_test), -1))
            iso_row = {"normal_digit": normal, "method": "iforest", "seed": seed}
            iso_row.update(evaluate(split.y_test, -iso.score_samples(flat_test)))
            results.append(iso_row)
            log(
                f"digit {normal} seed {seed}: esad auroc {row['auroc']:.4f} "
                f"iforest {iso_row['auroc']:.4f} ({split.n_labelled} labelled, {seconds:.1f} s)"
            )
    means = {
        m: float(np.mean([r["auroc"] for r in results if r["method"] == m]))
        for m in ("esad", "iforest")
    }
    return {
        "protocol": {"data": "sklearn digits 8x8", "gamma_l": gamma_l, "seeds": seeds},
        "results": results,
        "mean_auroc": means,
    }


def markdown(report: dict) -> str:
    rows = report["results"]
    lines = ["| normal digit | ESAD AUROC % | IsolationForest AUROC % |", "|---|---|---|"]
    for d in range(10):
        e = np.mean([r["auroc"] for r in rows if r["normal_digit"] == d and r["method"] == "esad"])
        i = np.mean(
            [r["auroc"] for r in rows if r["normal_digit"] == d and r["method"] == "iforest"]
        )
        lines.append(f"| {d} | {100 * e:.1f} | {100 * i:.1f} |")
    m = report["mean_auroc"]
    lines.append(f"| mean | **{100 * m['esad']:.1f}** | {100 * m['iforest']:.1f} |")
    return "\n".join(lines)
