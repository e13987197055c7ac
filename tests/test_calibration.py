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
