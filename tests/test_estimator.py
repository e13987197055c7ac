"""ESAD's estimator contract, a toy AUROC floor, determinism, persistence and bad input."""

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ede import ESAD
from ede.core.metrics import evaluate

FAST = dict(epochs=40, batch_size=64, min_steps=None)


def toy(n_normal=400, n_anom=40, d=6, seed=0):
    """Normals in a Gaussian blob; anomalies shifted along every axis."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(0, 1, (n_normal, d))
    anom = rng.normal(3.5, 1, (n_anom, d))
    X = np.vstack([normal, anom]).astype(np.float32)
    y = np.r_[np.zeros(n_normal), np.ones(n_anom)].astype(int)
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = toy()
    y_semi = y.copy()
    y_semi[np.flatnonzero(y)[10:]] = 0  # 10 labelled anomalies, 30 hidden among unlabelled
    return ESAD(seed=0, **FAST).fit(X, y_semi), X, y


def test_constructor_only_stores_params():
    det = ESAD(lambda_entropy=0.3, eta=2.0, hidden=(8, 4))
    assert det.get_params()["lambda_entropy"] == 0.3
    assert clone(det).get_params() == det.get_params()
    assert not [k for k in vars(det) if k.endswith("_")]
    ESAD(lr=-1.0)  # invalid, but only fit validates


def test_unfitted_scoring_raises():
    with pytest.raises(NotFittedError):
        ESAD().decision_function(np.zeros((2, 3)))


def test_fit_sets_state_and_separates_toy_anomalies(fitted):
    det, X, y = fitted
    assert det.n_features_in_ == 6 and det.input_shape_ == (6,)
    assert len(det.history_) == FAST["epochs"]
    assert np.isfinite(det.threshold_)
    scores = det.decision_function(X)
    assert scores.shape == (len(X),) and scores.dtype == np.float64
    assert evaluate(y, scores)["auroc"] > 0.95
    pred = det.predict(X)
    assert set(np.unique(pred)) <= {0, 1}
    assert pred[y == 1].mean() > pred[y == 0].mean()


def test_score_grows_with_distance_from_normal_data():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (500, 2)).astype(np.float32)
    det = ESAD(seed=0, epochs=30, batch_size=64, min_steps=None).fit(X)
    ray = np.array([[r, r] for r in (0.0, 3.0, 6.0, 12.0, 24.0)], dtype=np.float32)
    scores = det.decision_function(ray)
    assert np.all(np.diff(scores) > 0), scores


def test_same_seed_same_scores_other_seed_differs():
    X, y = toy(n_normal=200, n_anom=10)
    a = ESAD(seed=3, epochs=3, min_steps=None).fit(X, y).decision_function(X)
    b = ESAD(seed=3, epochs=3, min_steps=None).fit(X, y).decision_function(X)
    c = ESAD(seed=4, epochs=3, min_steps=None).fit(X, y).decision_function(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fitting_twice_equals_fitting_once_on_last_data():
    X1, y1 = toy(seed=1, n_normal=150, n_anom=8)
    X2, y2 = toy(seed=2, n_normal=150, n_anom=8)
    twice = ESAD(seed=0, epochs=3, min_steps=None).fit(X1, y1).fit(X2, y2)
    once = ESAD(seed=0, epochs=3, min_steps=None).fit(X2, y2)
    np.testing.assert_array_equal(twice.decision_function(X1), once.decision_function(X1))
    assert twice.threshold_ == once.threshold_


@pytest.mark.parametrize("where", ["local", "s3"])
def test_save_load_gives_identical_scores(fitted, tmp_path, where, request):
    det, X, _ = fitted
    base = str(tmp_path / "m") if where == "local" else request.getfixturevalue("s3_bucket") + "/m"
    det.save(base)
    back = ESAD.load(base)
    np.testing.assert_array_equal(back.decision_function(X), det.decision_function(X))
    assert back.threshold_ == det.threshold_
    assert back.get_params() == det.get_params()


def test_load_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no ESAD model"):
        ESAD.load(str(tmp_path / "nothing"))


def test_load_checks_every_file_against_esad_json(fitted, tmp_path):
    """A changed weights.pt, or a folder whose esad.json records no hashes (nothing shows
    it is whole), is refused with one line naming the file."""
    det, _, _ = fitted
    base = tmp_path / "m"
    det.save(str(base))
    meta = json.loads((base / "esad.json").read_text())
    assert meta["files"]["weights.pt"]["bytes"] == (base / "weights.pt").stat().st_size
    weights = bytearray((base / "weights.pt").read_bytes())
    weights[len(weights) // 2] ^= 0x01
    (base / "weights.pt").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match=r"m/weights\.pt: sha256 does not match esad\.json"):
        ESAD.load(str(base))
    del meta["files"]
    (base / "esad.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"m/esad\.json: lists no file hashes"):
        ESAD.load(str(base))


def test_images_fit_and_score():
    from ede.bench.digits import digits_images

    X, digit = digits_images()
    y = (digit != 0).astype(int)
    normal = np.flatnonzero(y == 0)[:120]
    anom = np.flatnonzero(y == 1)
    train = np.r_[normal[:100], anom[:5]]
    test = np.r_[normal[100:], anom[5:205]]
    det = ESAD(seed=0, epochs=15, batch_size=32, min_steps=None).fit(X[train], y[train])
    assert det.input_shape_ == (1, 8, 8)
    assert evaluate(y[test], det.decision_function(X[test]))["auroc"] > 0.8
    with pytest.raises(ValueError, match=r"expects \(1, 8, 8\)"):
        det.decision_function(np.zeros((2, 1, 28, 28), dtype=np.float32))


def test_images_train_channels_last_and_leave_in_the_default_layout():
    """The conv net trains channels-last (faster convolutions) and comes back in the
    default layout, so saving, scoring and export see what they always saw."""
    from dataclasses import asdict

    import torch

    from ede.core.training import ArrayShard, LocalRuntime, train_loop

    seen = []

    class Spy(LocalRuntime):
        def prepare_model(self, model):
            seen.extend(
                p.is_contiguous(memory_format=torch.channels_last)
                for p in model.parameters()
                if p.dim() == 4 and p.shape[1] > 1  # one channel: both layouts agree
            )
            return super().prepare_model(model)

    det = ESAD(seed=0, epochs=2, min_steps=None, batch_size=16)
    X = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    config = {
        "net": asdict(det.net_config((1, 8, 8))),
        "train": asdict(det.train_config(image=True)),
        "data": ArrayShard(X, np.zeros(40, dtype=np.int64)),
    }
    net = train_loop(config, Spy())
    assert seen and all(seen)
    assert all(p.is_contiguous() for p in net.parameters())


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.array([[0.0, np.nan]] * 4), None, "4 NaN and 0 inf"),
        (np.array([[0.0, np.inf]] * 4), None, "0 NaN and 4 inf"),
        (np.zeros((0, 3)), None, "empty"),
        (np.zeros((4, 3)), np.array([0, 1, 2, 0]), r"outside \{0, 1\}.*: \[2\]"),
        (np.zeros((4, 3)), np.array([0, 1, -1, 0]), r"outside \{0, 1\}: \[-1\]"),
        (np.zeros((4, 3)), np.array([0, 1]), r"shape \(2,\), expected \(4,\)"),
        (np.zeros((4, 3)), np.ones(4), "every row as a known anomaly"),
        (np.zeros(4), None, "2-D"),
        (np.array([["a", "b"]] * 4), None, "numeric"),
    ],
)
def test_bad_training_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        ESAD(epochs=1, min_steps=None).fit(X, y)


def test_bad_parameters_fail_at_fit():
    with pytest.raises(ValueError, match="lr=-1.0"):
        ESAD(lr=-1.0).fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="anomaly_target"):
        ESAD(anomaly_target="blur").fit(np.zeros((4, 2)))


def test_bad_scoring_input(fitted):
    det, _, _ = fitted
    with pytest.raises(ValueError, match="has 5 features, but the model was fitted with 6"):
        det.decision_function(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        det.decision_function(np.full((3, 6), np.nan))
    with pytest.raises(ValueError, match="empty"):
        det.decision_function(np.zeros((0, 6)))


@pytest.mark.parametrize(
    "n_rows, expected_epochs",
    [(100, 1000), (2560, 100), (51200, 15)],  # 1, 10 and 200 steps per epoch at batch 256
)
def test_step_floor_and_cap_clip_epochs(n_rows, expected_epochs):
    from ede.core.training import planned_epochs

    steps_per_epoch = -(-n_rows // 256)
    assert planned_epochs(ESAD().train_config(), steps_per_epoch) == expected_epochs


def test_defaults_are_the_ones_selection_picked():
    """benchmarks/select_defaults.py records how the defaults were chosen; keep them in step."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "select_defaults.py"
    spec = importlib.util.spec_from_file_location("select_defaults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = ESAD().get_params()
    assert {k: params[k] for k in module.SHIPPED} == module.SHIPPED


def test_quantile_minmax_spreads_a_heavy_tailed_feature():
    """The default scaler maps each feature's 1st..99th percentiles onto [0, 1], so one
    extreme row no longer squeezes the rest of its feature; constant features stay put."""
    from ede.core.scaling import AffineScaler, QuantileMinMaxScaler

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=2000), rng.normal(size=2000), np.ones(2000)])
    X[0, 1] = 1e4  # one extreme row
    q = QuantileMinMaxScaler().fit(X).transform(X)
    box = np.percentile(q[:, :2], [1, 99], axis=0)
    np.testing.assert_allclose(box, [[0, 0], [1, 1]], atol=1e-5)
    assert np.all(q[:, 2] == 0)
    assert AffineScaler().fit(X).transform(X)[1:, 1].std() < 1e-3  # what min-max does to it
    assert ESAD().scaling == "quantile_minmax"


@pytest.mark.parametrize("target", ["invert", "noise"])
def test_a_run_resumed_from_a_checkpoint_ends_with_the_uninterrupted_weights(target):
    """`train_loop` resumed from epoch k's state (what a restarted Ray worker gets) draws
    the batches and noise of the skipped epochs (`skip_epoch`), so it ends with exactly
    the weights of a run that never stopped."""
    import copy
    from dataclasses import asdict

    import torch

    from ede.core.training import LocalRuntime, train_loop

    rng = np.random.default_rng(0)
    X = rng.random((300, 6), dtype=np.float32)
    y = (rng.random(300) < 0.05).astype(np.int64)
    det = ESAD(seed=1, epochs=6, min_steps=None, max_steps=None, batch_size=32)
    det.set_params(anomaly_target=target)
    config = {
        "net": asdict(det.net_config((6,))),
        "train": asdict(det.train_config()),
        "data": lambda rank, world: (X, y),
    }

    class Saving(LocalRuntime):
        def __init__(self, resume_from=None):
            super().__init__()
            self.states, self.resume_from = {}, resume_from

        def restore(self):
            return self.resume_from

        def report(self, metrics, state):
            super().report(metrics, state)
            self.states[metrics["epoch"]] = copy.deepcopy(state())

    whole = Saving()
    net = train_loop(config, whole)
    resumed = Saving(resume_from=whole.states[2])
    again = train_loop(config, resumed)
    assert [m["epoch"] for m in resumed.history] == [3, 4, 5]
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_bf16_trains_persists_and_loads(tmp_path):
    """precision="bf16" runs the forward pass under autocast (the weights it learns differ
    from fp32's), keeps fp32 weights, and round-trips through save/load."""
    X, y = toy()
    quick = dict(epochs=3, batch_size=64, min_steps=None, hidden=(32, 16), seed=0)
    bf16 = ESAD(precision="bf16", **quick).fit(X, y)
    fp32 = ESAD(**quick).fit(X, y)
    assert all(p.dtype == torch.float32 for p in bf16.net_.parameters())
    assert not np.allclose(bf16.decision_function(X), fp32.decision_function(X))
    assert evaluate(y, bf16.decision_function(X))["auroc"] > 0.9
    bf16.save(str(tmp_path / "m"))
    back = ESAD.load(str(tmp_path / "m"))
    assert back.get_params()["precision"] == "bf16"
    np.testing.assert_array_equal(back.decision_function(X), bf16.decision_function(X))


def test_a_folder_saved_before_precision_existed_loads_as_fp32(fitted, tmp_path):
    det, X, _ = fitted
    base = tmp_path / "m"
    det.save(str(base))
    meta = json.loads((base / "esad.json").read_text())
    del meta["params"]["precision"]
    (base / "esad.json").write_text(json.dumps(meta))
    back = ESAD.load(str(base))
    assert back.precision == "fp32"
    np.testing.assert_array_equal(back.decision_function(X), det.decision_function(X))


def test_bad_precision_fails_at_fit():
    with pytest.raises(ValueError, match="precision='fp8'"):
        ESAD(precision="fp8").fit(np.zeros((4, 2)))
