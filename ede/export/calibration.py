"""The decision threshold, chosen on validation normals at a target false-positive rate.

Why validation rows: the network has fitted its training rows, so their scores are
optimistically low and a training quantile flags more normals in production than
it promised. Rows the network never saw give an honest false-positive rate.

Rule: with n validation normals (y_val == 0: normal or unlabelled rows) and a
target rate f, allow m = floor(f * n) false positives; the threshold is the
(m+1)-th highest normal score, so at most m normals score strictly above it
(`is_anomaly = score > threshold`; realised FPR <= f, ties lower it). The
resolution is 1 / n: with f * n < 1 the threshold is the highest normal score.

Refit (`transfer_threshold`): the model that ships may be refitted on every training
row once the configuration is chosen, so no row is left that it never fitted. Its
threshold is then carried over from the model the rule above calibrated, fitted on
fewer rows with the same configuration: the calibrated threshold sits at level q of
that model's training normals' scores (its `train_score_quantiles_`), and the refit's
threshold is its own training normals' quantile at the same level q. Both models
overfit their training rows alike, so the in-sample level that held out-of-sample
rate f for the one holds it, approximately, for the other (a threshold above every
training score carries over as a ratio to the highest one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ede.core.metrics import evaluate

DEFAULT_TARGET_FPR = 0.01


@dataclass(frozen=True)
class Calibration:
    threshold: float
    target_fpr: float
    n_normals: int
    allowed_false_positives: int
    method: str = "validation_normals_quantile"
    in_sample_level: float | None = None  # `transfer_threshold`: the level carried over
    calibrated_threshold: float | None = None  # ... and the threshold it was calibrated at

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(
    scores: np.ndarray, y: np.ndarray, target_fpr: float = DEFAULT_TARGET_FPR
) -> Calibration:
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr={target_fpr!r}: must be in [0, 1)")
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y)
    normal = np.sort(scores[y == 0])[::-1]
    if len(normal) == 0:
        raise ValueError("no validation normals (y == 0) to calibrate the threshold on")
    m = int(np.floor(target_fpr * len(normal)))
    return Calibration(
        threshold=float(normal[min(m, len(normal) - 1)]),
        target_fpr=float(target_fpr),
        n_normals=int(len(normal)),
        allowed_false_positives=m,
    )


def transfer_threshold(
    cal: Calibration, levels: np.ndarray, calibrated: np.ndarray, refit: np.ndarray
) -> Calibration:
    """`cal` (calibrated for the model whose training-score quantiles at `levels` are
    `calibrated`) carried to the refit, whose quantiles at the same levels are `refit`."""
    levels, calibrated, refit = (np.asarray(a, np.float64) for a in (levels, calibrated, refit))
    if cal.threshold > calibrated[-1]:
        level, threshold = 1.0, refit[-1] * cal.threshold / max(calibrated[-1], 1e-12)
    else:
        level = float(np.interp(cal.threshold, calibrated, levels))
        threshold = float(np.interp(level, levels, refit))
    return replace(
        cal,
        threshold=float(threshold),
        method="validation_normals_quantile, carried to the refit at its in-sample level",
        in_sample_level=level,
        calibrated_threshold=cal.threshold,
    )


def operating_metrics(scores: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """AUROC/AUPRC (1 = labelled anomaly vs the rest) and the rates at `threshold`.

    Unlabelled rows may hold undetected anomalies, so these are estimates on
    labelled anomalies vs everything else; NaN-free: `None` when undefined.
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y)
    flagged = scores > threshold
    out = {k: _finite_or_none(v) for k, v in evaluate(y, scores).items()}
    out["fpr"] = _rate(flagged[y == 0])
    out["tpr"] = _rate(flagged[y == 1])
    out["n_rows"], out["n_labelled_anomalies"] = int(len(y)), int((y == 1).sum())
    return out


def _rate(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
