"""Deep SAD's semi-supervised protocol for the ODDS benchmarks, without its test leak.

Deep SAD's reference code draws its test set from a second random split, so
about 58% of its test rows are also training rows. Here the test set is, by
construction, the complement of the training pool: one stratified split per
seed decides everything, and nothing a model is fitted or tuned on is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from ede.core.checks import check_y


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise is not a bool
class SemiSupervisedSplit:
    """One seed's split; ``train_idx``/``test_idx`` index the original ``X``.

    ``y_train``: 1 = labelled anomaly, 0 = unlabelled (normals and pollution).
    ``y_test``: 1 = anomaly, 0 = normal.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_train_normal: int
    n_labelled: int
    n_pollution: int
    n_test_normal: int
    n_test_anomaly: int
    train_idx: np.ndarray
    test_idx: np.ndarray


def _binary_labels(y: np.ndarray, n: int) -> np.ndarray:
    return check_y(y, n)


def semi_supervised_split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    gamma_l: float = 0.05,
    gamma_p: float = 0.0,
    train_fraction: float = 0.6,
) -> SemiSupervisedSplit:
    """Split per Deep SAD's protocol (``ratio_known_normal = 0``) with a disjoint test set.

    ``gamma_l`` is the share of labelled anomalies in the final training set and
    ``gamma_p`` the share of anomalies in its unlabelled part. Both counts are
    capped by the training anomalies available (labelled first); training
    anomalies that are neither labelled nor pollution are dropped, not moved to
    test, so the test set keeps exactly ``1 - train_fraction`` of each class.
    """
    X = np.asarray(X)
    y = _binary_labels(y, len(X))
    if not 0.0 <= gamma_l < 1.0:
        raise ValueError(f"gamma_l must be in [0, 1), got {gamma_l}")
    if not 0.0 <= gamma_p < 1.0:
        raise ValueError(f"gamma_p must be in [0, 1), got {gamma_p}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n_normal_all, n_anomaly_all = int((y == 0).sum()), int((y == 1).sum())
    if n_normal_all < 2 or n_anomaly_all < 2:
        raise ValueError(
            "need at least 2 normals and 2 anomalies to split each class between train and "
            f"test; got {n_normal_all} normal(s) and {n_anomaly_all} anomal(y/ies)"
        )

    pool_idx, test_idx = train_test_split(
        np.arange(len(y)), train_size=train_fraction, stratify=y, random_state=seed
    )
    normal_idx = pool_idx[y[pool_idx] == 0]
    anomaly_idx = pool_idx[y[pool_idx] == 1]

    n_normal = len(normal_idx)
    n_pollution = int(gamma_p * n_normal / (1 - gamma_p))
    n_labelled = int(gamma_l * (n_normal + n_pollution) / (1 - gamma_l))
    n_labelled = min(n_labelled, len(anomaly_idx))
    n_pollution = min(n_pollution, len(anomaly_idx) - n_labelled)

    rng = np.random.default_rng(seed)
    anomaly_idx = rng.permutation(anomaly_idx)
    labelled_idx = anomaly_idx[:n_labelled]
    pollution_idx = anomaly_idx[n_labelled : n_labelled + n_pollution]

    train_idx = np.concatenate([normal_idx, pollution_idx, labelled_idx])
    y_train = np.concatenate(
        [np.zeros(n_normal + n_pollution, dtype=np.int64), np.ones(n_labelled, dtype=np.int64)]
    )
    order = rng.permutation(len(train_idx))
    train_idx, y_train = train_idx[order], y_train[order]
    test_idx = np.sort(test_idx)
    y_test = y[test_idx]
    return SemiSupervisedSplit(
        X_train=X[train_idx],
        y_train=y_train,
        X_test=X[test_idx],
        y_test=y_test,
        n_train_normal=n_normal,
        n_labelled=n_labelled,
        n_pollution=n_pollution,
        n_test_normal=int((y_test == 0).sum()),
        n_test_anomaly=int((y_test == 1).sum()),
        train_idx=train_idx,
        test_idx=test_idx,
    )


def validation_split(
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    fraction: float = 0.2,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carve a validation set out of the training set, so model selection never sees test.

    Stratified per class: each class with at least 2 rows puts at least one row on
    each side (so validation gets a labelled anomaly whenever there are 2 or more);
    a lone labelled anomaly stays in the fit part, where it can shape the model.
    Returns ``(X_fit, y_fit, X_val, y_val)``.
    """
    X_train = np.asarray(X_train)
    y_train = _binary_labels(y_train, len(X_train))
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val_parts, fit_parts = [], []
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(y_train == label))
        n_val = int(round(fraction * len(idx)))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val_parts.append(idx[:n_val])
        fit_parts.append(idx[n_val:])
    val_idx, fit_idx = np.sort(np.concatenate(val_parts)), np.sort(np.concatenate(fit_parts))
    if len(val_idx) == 0 or len(fit_idx) == 0:
        raise ValueError(
            f"cannot split {len(y_train)} training row(s) into fit and validation parts; "
            "need at least 2 rows of one class"
        )
    return X_train[fit_idx], y_train[fit_idx], X_train[val_idx], y_train[val_idx]
