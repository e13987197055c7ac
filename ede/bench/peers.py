"""Peer anomaly detectors for ede's benchmark, behind one tiny interface.

Every peer is ``fit_score_<name>(X_train, y_train, X_test, *, seed) -> scores`` where

* ``X_train`` is ``(n, d)`` float32, already scaled;
* ``y_train`` is ``(n,)`` with ``1`` = labelled (known) anomaly, ``0`` = unlabelled;
* ``X_test`` is ``(m, d)``, scaled the same way;
* the return value is ``(m,)`` float64 test scores, higher = more anomalous.

All peers receive exactly the same training data. ``PEERS`` maps a name to its function.
DeepOD and CatBoost are imported lazily so that ``ede`` works without them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ede.core.checks import check_y

__all__ = [
    "PEERS",
    "fit_score_catboost_supervised",
    "fit_score_deepsad_deepod",
    "fit_score_hgb_supervised",
    "fit_score_iforest",
]

_DEEPOD_MISSING = "deepsad_deepod needs the 'deepod' package: pip install --no-deps deepod==0.4.1"
_CATBOOST_MISSING = "catboost_supervised needs the 'catboost' package: pip install 'catboost>=1.2'"


def _check_inputs(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X_train = np.ascontiguousarray(X_train, dtype=np.float32)
    X_test = np.ascontiguousarray(X_test, dtype=np.float32)
    y_train = check_y(np.ravel(y_train), X_train.shape[0], "y_train")
    if X_train.ndim != 2 or X_test.ndim != 2:
        raise ValueError(
            f"X_train and X_test must be 2-D, got shapes {X_train.shape} and {X_test.shape}"
        )
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"X_train has {X_train.shape[1]} features but X_test has {X_test.shape[1]}"
        )
    return X_train, y_train, X_test


def _require_known_anomalies(y_train: np.ndarray, peer: str) -> None:
    if not (y_train == 1).any():
        raise ValueError(
            f"{peer} needs at least one labelled anomaly (y_train == 1), but y_train has none"
        )


def _require_both_classes(y_train: np.ndarray, peer: str) -> None:
    """A classifier of known anomalies vs the rest needs rows of each kind."""
    _require_known_anomalies(y_train, peer)
    if (y_train == 1).all():
        raise ValueError(f"{peer} needs unlabelled rows (y_train == 0), but y_train has none")


def fit_score_deepsad_deepod(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    *,
    seed: int,
    epochs: int | None = None,
) -> np.ndarray:
    """DeepOD 0.4.1 ``DeepSAD`` with its shipped defaults, on CPU.

    DeepOD's ``DeepSAD.fit(X, y)`` takes ``y == 1`` as known anomalies (it maps them to the
    paper's ``-1`` internally) and everything else as unlabelled. Its defaults are
    epochs=100, batch_size=64, lr=1e-3 (Adam, weight_decay=1e-5), MLP hidden_dims='100,50',
    rep_dim=128, ReLU, no bias, batches drawn by a class-balanced WeightedRandomSampler.
    ``epochs`` overrides the epoch count (``None`` keeps DeepOD's default); only tests
    should use it. Scores are ``decision_function(X_test)`` (squared distance to centre).
    """
    try:
        import torch
        from deepod.models.tabular import DeepSAD
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(_DEEPOD_MISSING) from exc

    X_train, y_train, X_test = _check_inputs(X_train, y_train, X_test)
    # DeepOD would otherwise die with a ZeroDivisionError in its sampler weights.
    _require_known_anomalies(y_train, "deepsad_deepod")

    torch.manual_seed(seed)  # DeepOD's constructor seeds torch/numpy/random again
    kwargs: dict[str, object] = {"device": "cpu", "verbose": 0, "random_state": seed}
    if epochs is not None:
        kwargs["epochs"] = int(epochs)
    model = DeepSAD(**kwargs)
    model.fit(X_train, y_train)
    return np.asarray(model.decision_function(X_test), dtype=np.float64).ravel()


def fit_score_iforest(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, *, seed: int
) -> np.ndarray:
    """sklearn ``IsolationForest`` (defaults), unsupervised: labels are ignored."""
    from sklearn.ensemble import IsolationForest

    X_train, y_train, X_test = _check_inputs(X_train, y_train, X_test)
    model = IsolationForest(random_state=seed).fit(X_train)
    return -np.asarray(model.score_samples(X_test), dtype=np.float64)


def fit_score_hgb_supervised(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, *, seed: int
) -> np.ndarray:
    """sklearn ``HistGradientBoostingClassifier`` (defaults): known anomalies vs the rest."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X_train, y_train, X_test = _check_inputs(X_train, y_train, X_test)
    _require_both_classes(y_train, "hgb_supervised")
    model = HistGradientBoostingClassifier(random_state=seed).fit(X_train, y_train)
    pos = int(np.flatnonzero(model.classes_ == 1)[0])
    return np.asarray(model.predict_proba(X_test)[:, pos], dtype=np.float64)


def fit_score_catboost_supervised(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, *, seed: int
) -> np.ndarray:
    """CatBoost (shipped defaults): known anomalies vs the rest, like ``hgb_supervised``.

    ADBench's strongest label-using method, so the bar a semi-supervised detector must
    clear to be worth its labels. One thread, because the benchmark runs every method on
    one core; ``allow_writing_files=False`` keeps CatBoost from leaving ``catboost_info/``
    in the working directory.
    """
    try:
        from catboost import CatBoostClassifier
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(_CATBOOST_MISSING) from exc

    X_train, y_train, X_test = _check_inputs(X_train, y_train, X_test)
    _require_both_classes(y_train, "catboost_supervised")
    model = CatBoostClassifier(
        random_seed=seed, thread_count=1, verbose=False, allow_writing_files=False
    )
    model.fit(X_train, y_train)
    pos = int(np.flatnonzero(np.asarray(model.classes_) == 1)[0])
    return np.asarray(model.predict_proba(X_test)[:, pos], dtype=np.float64)


PEERS: dict[str, Callable[..., np.ndarray]] = {
    "deepsad_deepod": fit_score_deepsad_deepod,
    "iforest": fit_score_iforest,
    "hgb_supervised": fit_score_hgb_supervised,
    "catboost_supervised": fit_score_catboost_supervised,
}
