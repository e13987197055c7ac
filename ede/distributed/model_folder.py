"""From prepared data and Ray Train to a model folder `ede export` can read.

`ede train --workers N` and the retraining flow share this: train on the fit rows
(or take a finished run's checkpoint),
calibrate the threshold on the validation rows the network never fitted, then write
the folder (validation rows and provenance first, the model last: `esad.json`, which
`ESAD.save` writes last, marks a complete folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray.train

from ede.core.estimator import ESAD
from ede.data import provenance
from ede.distributed.cluster import Scaling
from ede.distributed.trainer import (
    PreparedData,
    RunSpec,
    estimator_from_checkpoint,
    fit_distributed,
)
from ede.export.calibration import Calibration, calibrate_threshold


@dataclass
class TrainedFolder:
    det: ESAD
    checkpoint: ray.train.Checkpoint
    calibration: Calibration
    out: str

    @property
    def final_val_auroc(self) -> float:
        last = self.det.history_[-1] if self.det.history_ else {}
        return float(last.get("val_auroc", float("nan")))


def train_model_folder(
    det: ESAD,
    data: PreparedData,
    out: str,
    scaling: Scaling,
    run: RunSpec,
    *,
    label_column: str = "label",
    target_fpr: float = 0.01,
    record: dict[str, Any] | None = None,
) -> TrainedFolder:
    """Fit `det`'s configuration on Ray Train and save it with its validation rows under `out`.

    `record` adds to provenance.json (e.g. the data's source and fingerprint).
    """
    _check(data, target_fpr)
    det, result = fit_distributed(det, data, scaling, run)
    training = {"workers": scaling.workers, "gpu": scaling.use_gpu, "checkpoint": result.path}
    return _save(det, result.checkpoint, data, out, label_column, target_fpr, record, training)


def model_folder_from_checkpoint(
    det: ESAD,
    checkpoint: ray.train.Checkpoint,
    data: PreparedData,
    out: str,
    *,
    label_column: str = "label",
    target_fpr: float = 0.01,
    record: dict[str, Any] | None = None,
) -> TrainedFolder:
    """The model folder of a finished run, e.g. a search's best trial, without training again:
    that trial already trained the winning configuration on the same rows, budget and seed."""
    _check(data, target_fpr)
    det = estimator_from_checkpoint(det, checkpoint, data)
    training = {"checkpoint": checkpoint.path}
    return _save(det, checkpoint, data, out, label_column, target_fpr, record, training)


def _check(data: PreparedData, target_fpr: float) -> None:
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr={target_fpr}: must be in [0, 1)")
    if len(data.y_val) == 0:
        raise ValueError("no validation rows: the threshold is calibrated on them")


def _save(det, checkpoint, data, out, label_column, target_fpr, record, training) -> TrainedFolder:
    names = list(data.layout.feature_names)
    scores = det.decision_function(pd.DataFrame(data.X_val, columns=names)).astype(np.float32)
    cal = calibrate_threshold(scores, data.y_val, target_fpr)
    det.threshold_ = cal.threshold
    provenance.write_validation(
        out, provenance.validation_table(data.X_val, data.y_val, names, label_column)
    )
    record = dict(record or {})
    provenance.write_provenance(
        out,
        {
            **record,
            "label_column": label_column,
            "calibration": cal.to_dict(),
            "data": {
                **record.get("data", {}),
                "rows": data.layout.n_rows,
                "fit_rows": data.fit_rows,
                "validation_rows": len(data.y_val),
            },
            "training": training,
        },
    )
    det.save(out)
    return TrainedFolder(det, checkpoint, cal, out)
