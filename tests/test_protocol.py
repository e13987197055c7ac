"""The semi-supervised protocol: Deep SAD's counts, with a test set disjoint from training."""

from __future__ import annotations

import numpy as np
import pytest

from ede.data.protocol import semi_supervised_split, validation_split


def _data(n_normal: int = 1000, n_anomaly: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = n_normal + n_anomaly
    X = np.column_stack([np.arange(n), rng.normal(size=n)]).astype(np.float32)  # col 0 = row id
    y = np.r_[np.zeros(n_normal, dtype=np.int64), np.ones(n_anomaly, dtype=np.int64)]
    perm = rng.permutation(n)
    return X[perm], y[perm]


@pytest.mark.parametrize("gamma_l,gamma_p", [(0.05, 0.0), (0.01, 0.0), (0.05, 0.1), (0.1, 0.05)])
def test_counts_follow_deep_sad(gamma_l: float, gamma_p: float) -> None:
    X, y = _data()
    split = semi_supervised_split(X, y, seed=0, gamma_l=gamma_l, gamma_p=gamma_p)
    n_pollution = int(gamma_p * 600 / (1 - gamma_p))
    assert split.n_train_normal == 600
    assert split.n_pollution == n_pollution
    assert split.n_labelled == int(gamma_l * (600 + n_pollution) / (1 - gamma_l))
    assert (split.n_test_normal, split.n_test_anomaly) == (400, 80)
    assert len(split.y_train) == 600 + split.n_pollution + split.n_labelled
    assert split.y_train.sum() == split.n_labelled
    # Pollution: anomalies in training rows labelled 0.
    assert (y[split.train_idx][split.y_train == 0] == 1).sum() == split.n_pollution
    np.testing.assert_array_equal(y[split.train_idx][split.y_train == 1], 1)


def test_gamma_l_default_count() -> None:
    X, y = _data()
    split = semi_supervised_split(X, y, seed=3)
    assert split.n_labelled == int(0.05 * 600 / 0.95) == 31
    assert split.n_pollution == 0


def test_test_set_is_complement_of_training_pool() -> None:
    X, y = _data()
    split = semi_supervised_split(X, y, seed=1, gamma_l=0.05, gamma_p=0.05)
    train, test = set(split.train_idx.tolist()), set(split.test_idx.tolist())
    assert not train & test
    dropped = set(range(len(y))) - train - test
    assert y[sorted(dropped)].tolist() == [1] * len(dropped)  # only unused training anomalies
    assert len(dropped) == 120 - split.n_labelled - split.n_pollution
    assert (y[split.test_idx] == 0).sum() == 400 and (y[split.test_idx] == 1).sum() == 80
    np.testing.assert_array_equal(split.X_train, X[split.train_idx])
    np.testing.assert_array_equal(split.X_test, X[split.test_idx])
    np.testing.assert_array_equal(split.y_test, y[split.test_idx])
    # No test row appears in training, even by value (column 0 is the row id).
    assert not set(split.X_train[:, 0].tolist()) & set(split.X_test[:, 0].tolist())


def test_deterministic_per_seed_and_varies_across_seeds() -> None:
    X, y = _data()
    a = semi_supervised_split(X, y, seed=7, gamma_p=0.05)
    b = semi_supervised_split(X, y, seed=7, gamma_p=0.05)
    c = semi_supervised_split(X, y, seed=8, gamma_p=0.05)
    np.testing.assert_array_equal(a.train_idx, b.train_idx)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.test_idx, b.test_idx)
    assert not np.array_equal(a.test_idx, c.test_idx)
    assert not np.array_equal(a.train_idx, c.train_idx)


def test_training_rows_are_shuffled() -> None:
    X, y = _data()
    split = semi_supervised_split(X, y, seed=0, gamma_l=0.1)
    labelled_at = np.flatnonzero(split.y_train == 1)
    assert labelled_at.min() < len(split.y_train) - split.n_labelled  # not all at the end


def test_counts_capped_when_anomalies_are_scarce() -> None:
    X, y = _data(n_normal=1000, n_anomaly=20)  # 12 training anomalies
    split = semi_supervised_split(X, y, seed=0, gamma_l=0.05, gamma_p=0.1)
    assert split.n_labelled == 12 and split.n_pollution == 0
    split = semi_supervised_split(X, y, seed=0, gamma_l=0.01, gamma_p=0.1)
    assert split.n_labelled == int(0.01 * (600 + 66) / 0.99) == 6
    assert split.n_pollution == 6
    assert split.n_test_anomaly == 8


def test_validation_split_is_stratified() -> None:
    X, y = _data()
    split = semi_supervised_split(X, y, seed=0, gamma_l=0.05)
    X_fit, y_fit, X_val, y_val = validation_split(split.X_train, split.y_train, seed=0)
    assert len(y_fit) + len(y_val) == len(split.y_train)
    assert y_val.sum() == round(0.2 * split.n_labelled) and y_fit.sum() + y_val.sum() == 31
    assert abs(len(y_val) - 0.2 * len(split.y_train)) <= 2
    assert not set(X_fit[:, 0].tolist()) & set(X_val[:, 0].tolist())
    again = validation_split(split.X_train, split.y_train, seed=0)
    np.testing.assert_array_equal(again[2], X_val)


def test_validation_split_small_label_counts() -> None:
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.zeros(20, dtype=np.int64)
    y[[3, 11]] = 1
    _, y_fit, _, y_val = validation_split(X, y, fraction=0.1, seed=0)
    assert y_val.sum() == 1 and y_fit.sum() == 1  # >= 2 labelled: one goes to validation
    y[11] = 0
    _, y_fit, _, y_val = validation_split(X, y, seed=0)
    assert y_fit.sum() == 1 and y_val.sum() == 0  # a lone labelled anomaly stays in fit


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"gamma_l": 1.0}, "gamma_l"),
        ({"gamma_l": -0.1}, "gamma_l"),
        ({"gamma_p": 1.0}, "gamma_p"),
        ({"train_fraction": 0.0}, "train_fraction"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    X, y = _data(100, 10)
    with pytest.raises(ValueError, match=message):
        semi_supervised_split(X, y, seed=0, **kwargs)


def test_bad_labels_raise() -> None:
    X, y = _data(100, 10)
    with pytest.raises(ValueError, match=r"\[2\]"):
        semi_supervised_split(X, np.where(y == 1, 2, 0), seed=0)
    with pytest.raises(ValueError, match="anomal"):
        semi_supervised_split(X, np.zeros_like(y), seed=0)
    with pytest.raises(ValueError, match="normal"):
        semi_supervised_split(X, np.ones_like(y), seed=0)
    with pytest.raises(ValueError, match="shape"):
        semi_supervised_split(X, y[:-1], seed=0)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(X, y, fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="cannot split"):
        validation_split(X[:1], y[:1] * 0, seed=0)


def test_cardio_counts(odds_dir) -> None:
    with np.load(odds_dir / "cardio.npz") as data:
        X, y = data["X"], data["y"].astype(np.int64)
    n_normal, n_anomaly = int((y == 0).sum()), int((y == 1).sum())
    split = semi_supervised_split(X, y, seed=0, gamma_l=0.05)
    assert abs(split.n_train_normal - 0.6 * n_normal) <= 1
    assert split.n_train_normal + split.n_test_normal == n_normal
    assert split.n_labelled == int(0.05 * split.n_train_normal / 0.95)
    train, test = set(split.train_idx.tolist()), set(split.test_idx.tolist())
    assert not train & test
    dropped = sorted(set(range(len(y))) - train - test)
    np.testing.assert_array_equal(y[dropped], 1)
    assert split.n_labelled + len(dropped) + split.n_test_anomaly == n_anomaly
    assert abs(split.n_test_anomaly - 0.4 * n_anomaly) <= 1
