"""`ede train` in process: one table in, one model folder out, no Ray.

Why under ede/export: this is the lowest layer that sees all it needs, the estimator
(ede/core), the table and its split (ede/data) and the folder's format and threshold
(`ede.export.model_folder`); the core knows no tables, the data layer no torch, and
ede/distributed would make training in process pull Ray in. Its twin on Ray Train
is `ede.distributed.model_folder`; both write through `write_model_folder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ede.core.estimator import ESAD
from ede.data.fingerprint import rows_sha256
from ede.data.protocol import validation_split
from ede.data.tables import read_table
from ede.export.calibration import DEFAULT_TARGET_FPR, Calibration
from ede.export.model_folder import check_target_fpr, write_model_folder
from ede.storage import check_bucket, shown_url


@dataclass(frozen=True)
class FittedFolder:
    det: ESAD
    calibration: Calibration
    rows: int
    labelled: int
    fit_rows: int
    validation_rows: int
    validation_labelled: int


def fit_model_folder(
    det: ESAD,
    data_url: str,
    out: str,
    *,
    label_column: str = "label",
    validation_fraction: float = 0.2,
    target_fpr: float = DEFAULT_TARGET_FPR,
    id_columns: list[str] | None = None,
) -> FittedFolder:
    """Fit `det` on all but a stratified validation split (seeded by `det.seed`), which
    calibrates the threshold and stays in the folder. The features are every column but
    the label and `id_columns` (`ede.core.checks.feature_columns`); `FittedFolder.det`
    names them (`feature_names_in_`)."""
    check_target_fpr(target_fpr)
    check_bucket(out)  # a typo in --out fails now, not after the fit
    table = read_table(data_url, label_column=label_column, id_columns=id_columns)
    y = table.y if table.y is not None else np.zeros(len(table.X), dtype=np.int64)
    X_fit, y_fit, X_val, y_val = validation_split(
        table.X, y, fraction=validation_fraction, seed=det.seed
    )
    names = table.feature_names
    det.fit(pd.DataFrame(X_fit, columns=names), y_fit)  # a frame: the model keeps the names
    record = {
        "validation_fraction": validation_fraction,
        "data": {
            "source": shown_url(data_url),
            "id_columns": list(id_columns or []),
            "rows": len(table.X),
            "rows_sha256": rows_sha256(table.X, table.y),
            "fit_rows": len(X_fit),
            "validation_rows": len(X_val),
        },
    }
    cal = write_model_folder(
        det,
        out,
        X_val,
        y_val,
        feature_names=names,
        label_column=label_column,
        target_fpr=target_fpr,
        record=record,
    )
    return FittedFolder(
        det, cal, len(table.X), int(y.sum()), len(X_fit), len(X_val), int(y_val.sum())
    )
