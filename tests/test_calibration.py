"""The threshold rule: at most floor(f * n) validation normals score above it."""

import numpy as np
import pytest

from ede.export.calibration import calibrate_threshold, operating_metrics


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2])
def test_false_positives_never_exceed_the_target(target):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000)
    y = (rng.random(1000) < 0.1).astype(int)
    cal = calibrate_threshold(scores, y, target)
    normals = scores[y == 0]
    assert cal.n_normals == len(normals)
    assert (normals > cal.threshold).sum() == cal.allowed_false_positives
    assert (normals > cal.threshold).mean() <= target


def test_resolution_and_bad_input():
    cal = calibrate_threshold(np.arange(10.0), np.zeros(10), 0.05)  # 0.5 false positives allowed
    assert cal.threshold == 9.0 and cal.allowed_false_positives == 0
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate_threshold(np.arange(3.0), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="no validation normals"):
        calibrate_threshold(np.arange(3.0), np.ones(3), 0.01)


def test_operating_metrics_without_labelled_anomalies_has_no_nan():
    m = operating_metrics(np.arange(5.0), np.zeros(5), 2.5)
    assert m["auroc"] is None and m["tpr"] is None and m["fpr"] == 0.4


def test_a_transferred_threshold_keeps_its_in_sample_level():
    from ede.core.estimator import TRAIN_SCORE_LEVELS as levels
    from ede.export.calibration import transfer_threshold

    rng = np.random.default_rng(1)
    calibrated = np.quantile(rng.gamma(2.0, size=20_000), levels)
    cal = calibrate_threshold(rng.gamma(2.0, size=2_000), np.zeros(2_000), 0.01)
    same = transfer_threshold(cal, levels, calibrated, calibrated)
    assert same.threshold == pytest.approx(cal.threshold)
    assert same.calibrated_threshold == cal.threshold and 0.95 < same.in_sample_level < 1.0
    doubled = transfer_threshold(cal, levels, calibrated, 2 * calibrated)  # a refit's scale
    assert doubled.threshold == pytest.approx(2 * cal.threshold, rel=1e-6)
    assert doubled.in_sample_level == same.in_sample_level
    above = calibrate_threshold(np.array([2 * calibrated[-1]]), np.zeros(1), 0.0)
    beyond = transfer_threshold(above, levels, calibrated, 3 * calibrated)  # past every score
    assert beyond.in_sample_level == 1.0 and beyond.threshold == pytest.approx(3 * above.threshold)


def test_a_refit_on_the_validation_rows_keeps_its_false_positive_promise():
    """The flow's refit: ESAD on the fit rows is calibrated at 5% on the validation rows,
    the same configuration refitted on fit + validation rows gets the carried threshold.
    On 20,000 fresh normals its false-positive rate stays at or under the target, as the
    calibration rule promises, without collapsing to nothing. The transfer errs on the
    safe side: the refit, fitted on more rows, overfits them a little less than the model
    the level came from (measured: 3.4% and 2.6% on two such data sets, against 3.8% and
    3.7% for the calibrated model itself on the same fresh rows)."""
    from ede import ESAD
    from ede.core.estimator import TRAIN_SCORE_LEVELS as levels
    from ede.export.calibration import transfer_threshold

    rng = np.random.default_rng(0)
    d, n = 12, 1_500
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    normals = lambda k: np.tanh(rng.normal(size=(k, d)) @ mix).astype(np.float32)  # noqa: E731
    X_fit, X_val, X_new = normals(n), normals(n // 4), normals(20_000)
    selected = ESAD(seed=0).fit(X_fit)
    refit = ESAD(seed=0).fit(np.vstack([X_fit, X_val]))
    cal = calibrate_threshold(selected.decision_function(X_val), np.zeros(len(X_val)), 0.05)
    carried = transfer_threshold(
        cal, levels, selected.train_score_quantiles_, refit.train_score_quantiles_
    )
    fpr = (refit.decision_function(X_new) > carried.threshold).mean()
    assert 0.01 <= fpr <= 0.055, fpr
    assert carried.threshold != cal.threshold  # carried by level, not copied
