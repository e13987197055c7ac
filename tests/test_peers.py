"""Peer methods of ede's benchmark: shape, finiteness and a sanity AUROC on easy data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ede.bench.peers import (
    PEERS,
    fit_score_catboost_supervised,
    fit_score_deepsad_deepod,
    fit_score_hgb_supervised,
    fit_score_iforest,
)

D = 8


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    normals = rng.normal(0.0, 1.0, size=(600, D))
    anomalies = rng.normal(3.0, 1.0, size=(30, D))
    X_train = np.vstack([normals, anomalies]).astype(np.float32)
    y_train = np.r_[np.zeros(600), np.ones(30)].astype(np.int64)
    X_test = np.vstack(
        [rng.normal(0.0, 1.0, size=(200, D)), rng.normal(3.0, 1.0, size=(20, D))]
    ).astype(np.float32)
    y_test = np.r_[np.zeros(200), np.ones(20)].astype(np.int64)
    return X_train, y_train, X_test, y_test


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_keys():
    assert set(PEERS) == {"deepsad_deepod", "iforest", "hgb_supervised", "catboost_supervised"}
    assert PEERS["iforest"] is fit_score_iforest
    assert PEERS["hgb_supervised"] is fit_score_hgb_supervised
    assert PEERS["deepsad_deepod"] is fit_score_deepsad_deepod
    assert PEERS["catboost_supervised"] is fit_score_catboost_supervised


@pytest.mark.parametrize("name", ["iforest", "hgb_supervised"])
def test_sklearn_peers(name):
    X_train, y_train, X_test, y_test = _data()
    scores = PEERS[name](X_train, y_train, X_test, seed=0)
    assert scores.shape == (X_test.shape[0],)
    assert np.isfinite(scores).all()
    assert roc_auc_score(y_test, scores) > 0.8


@pytest.mark.parametrize("name", ["hgb_supervised", "catboost_supervised"])
def test_classifier_peers_need_both_classes(name):
    if name == "catboost_supervised":
        pytest.importorskip("catboost")
    X_train, y_train, X_test, _ = _data()
    with pytest.raises(ValueError, match="labelled anomaly"):
        PEERS[name](X_train, np.zeros_like(y_train), X_test, seed=0)
    with pytest.raises(ValueError, match="unlabelled rows"):
        PEERS[name](X_train, np.ones_like(y_train), X_test, seed=0)


def test_catboost_supervised(tmp_path, monkeypatch):
    pytest.importorskip("catboost")
    monkeypatch.chdir(tmp_path)  # where CatBoost would put catboost_info/
    X_train, y_train, X_test, y_test = _data()
    scores = fit_score_catboost_supervised(X_train, y_train, X_test, seed=0)
    assert scores.shape == (X_test.shape[0],)
    assert np.isfinite(scores).all()
    assert roc_auc_score(y_test, scores) > 0.8
    assert list(tmp_path.iterdir()) == []


def test_deepsad_deepod():
    pytest.importorskip("deepod")
    X_train, y_train, X_test, y_test = _data()
    scores = fit_score_deepsad_deepod(X_train, y_train, X_test, seed=0, epochs=3)
    assert scores.shape == (X_test.shape[0],)
    assert np.isfinite(scores).all()
    assert roc_auc_score(y_test, scores) > 0.8
    again = fit_score_deepsad_deepod(X_train, y_train, X_test, seed=0, epochs=3)
    np.testing.assert_allclose(scores, again, rtol=1e-5)
