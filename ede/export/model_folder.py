"""The model folder: what training (in process or on Ray) hands to `ede export`.

    validation.parquet   the rows held out of fitting, with their labels
    provenance.json      the data's source and fingerprint, the split, the calibration,
                         and whether the model was refitted on the validation rows
    weights.pt, esad.json  the fitted ESAD (`ede.core.persistence`); esad.json, written
                         last, closes the folder with the sha256 and size of every
                         other file, checked before any is used

One writer, so every path makes the same folder and the threshold has one owner: it
is calibrated here, once, on validation rows the network never fitted, at a target
false-positive rate; esad.json carries it, provenance.json records how it was
chosen, and `ede export` bakes that threshold into the graph instead of choosing
again. The validation rows stay so the export can check parity and report metrics
on unseen rows; a refit (the retraining flow's final model, fitted on every training
row once its configuration is chosen) has fitted them, and says so
(`validation_rows_fitted`): its metrics there are in-sample, and it is recalibrated
only on other held-out rows.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ede.core import persistence
from ede.core.estimator import ESAD, TRAIN_SCORE_LEVELS
from ede.data.parquet_encoding import writer_options
from ede.data.tables import IMAGE_COLUMN, read_labelled_rows
from ede.export.calibration import (
    DEFAULT_TARGET_FPR,
    Calibration,
    calibrate_threshold,
    transfer_threshold,
)
from ede.storage import join, shown_url

VALIDATION_FILE, PROVENANCE_FILE = "validation.parquet", "provenance.json"


def check_target_fpr(target_fpr: float) -> None:
    """Before any data is read or a net fitted: the rate is only used at the very end."""
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr={target_fpr}: must be in [0, 1)")


def write_model_folder(
    det: ESAD,
    out: str,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    feature_names: list[str],
    label_column: str = "label",
    target_fpr: float = DEFAULT_TARGET_FPR,
    record: dict[str, Any] | None = None,
    calibrated_on: ESAD | None = None,
) -> Calibration:
    """Calibrate `det`'s threshold on its validation rows and write the folder under `out`.

    `record` is the caller's part of provenance.json (data source and fingerprint, split,
    training); the label column and the calibration are the writer's. `calibrated_on`:
    `det` is a refit of that model's configuration on its fit rows and these validation
    rows, so the threshold is calibrated on that model, which never fitted them, and
    carried to `det` (`ede.export.calibration.transfer_threshold`).
    """
    check_target_fpr(target_fpr)
    table = _validation_table(X_val, y_val, feature_names, label_column)  # a clash: no write
    rows = pd.DataFrame(X_val, columns=feature_names) if X_val.ndim == 2 else X_val
    held_out = det if calibrated_on is None else calibrated_on
    cal = calibrate_threshold(
        held_out.decision_function(rows).astype(np.float32), y_val, target_fpr
    )
    if calibrated_on is not None:
        cal = transfer_threshold(
            cal,
            TRAIN_SCORE_LEVELS,
            calibrated_on.train_score_quantiles_,
            det.train_score_quantiles_,
        )
    det.threshold_ = cal.threshold
    buf = io.BytesIO()
    pq.write_table(table, buf, **writer_options(table.schema))
    provenance = {
        **(record or {}),
        "label_column": label_column,
        "calibration": cal.to_dict(),
        "validation_rows_fitted": calibrated_on is not None,
    }
    files = {
        VALIDATION_FILE: buf.getvalue(),
        PROVENANCE_FILE: json.dumps(provenance, indent=2).encode(),
    }
    persistence.save(det, out, files)  # esad.json last, with every file's sha256
    return cal


def _validation_table(
    X: np.ndarray, y: np.ndarray, feature_names: list[str], label_column: str
) -> pa.Table:
    """Tables keep their feature names; images go in one list column of flat (c*h*w) rows,
    the layout `read_labelled_rows` reads back."""
    if X.ndim == 2:
        columns = {name: X[:, j] for j, name in enumerate(feature_names)}
    else:
        flat = np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32)
        columns = {IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(flat.ravel(), flat.shape[1])}
    if label_column in columns:
        raise ValueError(f"label column '{label_column}' clashes with a feature name")
    columns[label_column] = np.asarray(y, dtype=np.int64)
    return pa.table(columns)


@dataclass(frozen=True)
class ModelFolder:
    """A folder as `ede export` reads it. `provenance` is {} for a model saved from Python
    (`ESAD.save` alone): it has no calibration to carry on and may lack validation rows."""

    url: str
    det: ESAD
    provenance: dict[str, Any]
    validation: bytes | None = field(default=None, repr=False)  # checked, as esad.json lists it

    @property
    def label_column(self) -> str:
        return self.provenance.get("label_column", "label")

    @property
    def calibration(self) -> Calibration | None:
        """The threshold's calibration when the folder was written; None without one."""
        cal = self.provenance.get("calibration")
        return Calibration(**cal) if cal else None

    @property
    def validation_rows_fitted(self) -> bool:
        """True for a refit: its validation rows are training rows, no longer held out."""
        return bool(self.provenance.get("validation_rows_fitted", False))

    @property
    def target_fpr(self) -> float:
        cal = self.calibration
        return DEFAULT_TARGET_FPR if cal is None else cal.target_fpr

    def validation_rows(self, url: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The folder's validation rows, or another labelled table's, in the model's order."""
        names, shape = self.det.input_feature_names(), self.det.input_shape_
        if url is not None:
            return read_labelled_rows(url, names, shape, self.label_column)
        own = join(self.url, VALIDATION_FILE)
        if self.validation is None:
            raise FileNotFoundError(
                f"{shown_url(own)}: no validation rows; `ede train` writes them, "
                "or pass --validation"
            )
        return read_labelled_rows(own, names, shape, self.label_column, self.validation)


def read_model_folder(url: str) -> ModelFolder:
    """Every file esad.json lists is checked before any is used; a file it does not list
    (a model saved from Python has no provenance or validation rows) is not the folder's."""
    det, files = persistence.load_folder(ESAD, url)
    provenance = json.loads(files[PROVENANCE_FILE]) if PROVENANCE_FILE in files else {}
    return ModelFolder(url.rstrip("/"), det, provenance, files.get(VALIDATION_FILE))
