"""From prepared data and Ray Train to a model folder `ede export` can read.

`ede train --workers N` and the retraining flow share this: train on the fit rows
(or take a finished run's checkpoint), then hand the model and the validation rows
the network never fitted to `ede.export.model_folder.write_model_folder`, the one
writer of the folder (and of its threshold) that training in process uses too. The
flow then refits the chosen configuration on every training row
(`refit_model_folder`), its threshold carried from the model that held them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray.train
from sklearn.base import clone

from ede.core.estimator import ESAD
from ede.distributed import cluster
from ede.distributed.cluster import Scaling
from ede.distributed.trainer import (
    PreparedData,
    RunSpec,
    estimator_from_checkpoint,
    every_row,
    fit_distributed,
    prepare_data,
)
from ede.export.calibration import DEFAULT_TARGET_FPR, Calibration
from ede.export.model_folder import check_target_fpr, write_model_folder
from ede.storage import check_bucket, shown_url


@dataclass
class TrainedFolder:
    det: ESAD
    checkpoint: ray.train.Checkpoint
    calibration: Calibration
    out: str
    selected: ESAD | None = None  # a refit's model of the same configuration on the fit rows

    @property
    def final_val_auroc(self) -> float:
        """Validation AUROC at the end of training, of the model that held those rows out."""
        history = (self.selected or self.det).history_
        last = history[-1] if history else {}
        return float(last.get("val_auroc", float("nan")))


def train_model_folder(
    det: ESAD,
    data: PreparedData,
    out: str,
    scaling: Scaling,
    run: RunSpec,
    *,
    label_column: str = "label",
    target_fpr: float = DEFAULT_TARGET_FPR,
    record: dict[str, Any] | None = None,
) -> TrainedFolder:
    """Fit `det`'s configuration on Ray Train and save it with its validation rows under `out`.

    `record` adds to provenance.json (e.g. the data's source and fingerprint).
    """
    check_calibration_rows(data, target_fpr)
    det, result = fit_distributed(det, data, scaling, run)
    training = {"workers": scaling.workers, "gpu": scaling.use_gpu, "checkpoint": result.path}
    return _save(det, result.checkpoint, data, out, label_column, target_fpr, record, training)


def train_table_folder(
    det: ESAD,
    data_url: str,
    out: str,
    scaling: Scaling,
    storage: str | None,
    *,
    label_column: str = "label",
    validation_fraction: float = 0.2,
    target_fpr: float = DEFAULT_TARGET_FPR,
    max_failures: int = 0,
    verbose: bool = False,
    id_columns: list[str] | None = None,
) -> TrainedFolder:
    """`ede train --workers N`: from a Parquet table, which Ray Train reads shard by shard,
    to the same folder as training in process. Every check that needs no cluster runs
    before one is joined, so a bad option fails in a second, not after Ray starts.
    `verbose`: Ray's worker logs (per report and checkpoint) on the console."""
    check_target_fpr(target_fpr)
    scaling.check()
    if not storage:
        raise ValueError("--workers needs --storage URL: Ray keeps checkpoints there")
    storage = cluster.storage_path(storage)  # fails on an unwritable place, before the data
    check_bucket(out)  # and so does a model folder with nowhere to go
    data = prepare_data(
        data_url,
        label_column=label_column,
        validation_fraction=validation_fraction,
        seed=det.seed,
        id_columns=id_columns,
    )
    cluster.connect(log_to_driver=verbose, train_v2=scaling.workers > 1)
    return train_model_folder(
        det,
        data,
        out,
        scaling,
        RunSpec(storage, max_failures=max_failures),
        label_column=label_column,
        target_fpr=target_fpr,
        record={
            "validation_fraction": validation_fraction,
            "data": {"source": shown_url(data_url)},
        },
    )


def model_folder_from_checkpoint(
    det: ESAD,
    checkpoint: ray.train.Checkpoint,
    data: PreparedData,
    out: str,
    *,
    label_column: str = "label",
    target_fpr: float = DEFAULT_TARGET_FPR,
    record: dict[str, Any] | None = None,
) -> TrainedFolder:
    """The model folder of a finished run, e.g. a search's best trial, without training again:
    that trial already trained the winning configuration on the same rows, budget and seed."""
    check_calibration_rows(data, target_fpr)
    det = estimator_from_checkpoint(det, checkpoint, data)
    training = {"checkpoint": checkpoint.path}
    return _save(det, checkpoint, data, out, label_column, target_fpr, record, training)


def refit_model_folder(
    selected: ESAD,
    data: PreparedData,
    out: str,
    scaling: Scaling,
    run: RunSpec,
    *,
    label_column: str = "label",
    target_fpr: float = DEFAULT_TARGET_FPR,
    record: dict[str, Any] | None = None,
) -> TrainedFolder:
    """`selected`'s configuration fitted again on every row of its table, fit and validation
    rows, with the same scaler, seed and step rule: the model a user gets from `ESAD().fit`
    on all of them. The threshold is calibrated on `selected`, which held the validation
    rows out, and carried to the refit (`write_model_folder(calibrated_on=)`)."""
    check_calibration_rows(data, target_fpr)
    every = every_row(data)
    det, result = fit_distributed(clone(selected), every, scaling, run)
    training = {
        "workers": scaling.workers,
        "gpu": scaling.use_gpu,
        "checkpoint": result.path,
        "refit_rows": every.fit_rows,
    }
    return _save(
        det, result.checkpoint, data, out, label_column, target_fpr, record, training, selected
    )


def check_calibration_rows(data: PreparedData, target_fpr: float) -> None:
    """Before Ray trains anything (callers that train before handing over, as the flow's
    refit does, call it first too): both would fail only once the model is written."""
    check_target_fpr(target_fpr)
    if len(data.y_val) == 0:
        raise ValueError("no validation rows: the threshold is calibrated on them")


def _save(
    det, checkpoint, data, out, label_column, target_fpr, record, training, calibrated_on=None
) -> TrainedFolder:
    record = dict(record or {})
    record["data"] = {
        **record.get("data", {}),
        "rows": data.layout.n_rows,
        "fit_rows": data.fit_rows,
        "validation_rows": len(data.y_val),
    }
    cal = write_model_folder(
        det,
        out,
        data.X_val,
        data.y_val,
        feature_names=list(data.layout.feature_names),
        label_column=label_column,
        target_fpr=target_fpr,
        record={**record, "training": training},
        calibrated_on=calibrated_on,
    )
    return TrainedFolder(det, checkpoint, cal, out, selected=calibrated_on)
