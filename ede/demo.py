"""`make demo`: ESAD on data that ships with scikit-learn, next to an IsolationForest.

Breast cancer (569 rows, 30 features): benign is the normal class, malignant the
anomaly. Deep SAD's protocol splits it 60/40; 5% of the training set are labelled
malignant cases, the rest of the training malignant cases are dropped, and the test
split is scored once by each detector.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

from ede.bench.peers import fit_score_iforest
from ede.estimator import ESAD
from ede.metrics import evaluate
from ede.protocol import semi_supervised_split
from ede.scaling import AffineScaler


def main(seed: int = 0, gamma_l: float = 0.05) -> dict[str, float]:
    torch.set_num_threads(1)
    data = load_breast_cancer()
    X = data.data.astype(np.float32)
    y = (data.target == 0).astype(np.int64)  # sklearn: 0 = malignant
    split = semi_supervised_split(X, y, seed=seed, gamma_l=gamma_l)
    print(
        f"breast cancer: {split.n_train_normal} benign + {split.n_labelled} labelled malignant "
        f"for training; test: {split.n_test_normal} benign, {split.n_test_anomaly} malignant"
    )
    start = time.perf_counter()
    det = ESAD(seed=seed).fit(split.X_train, split.y_train)
    esad = evaluate(split.y_test, det.decision_function(split.X_test))
    seconds = time.perf_counter() - start
    scaler = AffineScaler().fit(split.X_train)
    iso_scores = fit_score_iforest(
        scaler.transform(split.X_train), split.y_train, scaler.transform(split.X_test), seed=seed
    )
    iso = evaluate(split.y_test, iso_scores)
    flagged = int(det.predict(split.X_test).sum())
    print(f"ESAD            test AUROC {esad['auroc']:.3f}  AUPRC {esad['auprc']:.3f}", end="")
    print(f"  ({seconds:.1f} s)")
    print(f"IsolationForest test AUROC {iso['auroc']:.3f}  AUPRC {iso['auprc']:.3f}")
    print(f"ESAD flags {flagged} of {len(split.X_test)} test rows (threshold {det.threshold_:.3f})")
    return {"esad_auroc": esad["auroc"], "iforest_auroc": iso["auroc"]}


if __name__ == "__main__":
    main()
