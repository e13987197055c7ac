"""Input validation: every bad input becomes one ValueError that names the problem."""

from __future__ import annotations

import numpy as np


def check_X(X, name: str = "X") -> np.ndarray:
    """(n, d) tables or (n, c, h, w) images of finite numbers, as float32."""
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise ValueError(f"{name} is not a rectangular array: {exc}") from None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (2, 4):
        raise ValueError(
            f"{name} must be 2-D (n, d) tables or 4-D (n, c, h, w) images, got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if 0 in arr.shape[1:]:
        raise ValueError(f"{name} has no features: shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        where = f"row {bad[0]}, column {tuple(bad[1:]) if arr.ndim == 4 else bad[1]}"
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} inf values (first at {where})")
    return arr


def check_labels(values, name: str = "y") -> np.ndarray:
    """The one 0/1 label rule (1 = anomaly, known or true; 0 = normal or unlabelled), for
    arrays, table columns and benchmark labels alike: int64 out, or one ValueError that
    says what `name` holds instead (NaN, strings, other values)."""
    arr = np.asarray(values)
    if arr.dtype == object:  # a table column with missing or mixed values
        arr = np.asarray([np.nan if v is None else v for v in arr.tolist()])
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        if arr.dtype.kind in "USO":  # text such as yes/no or >50K: never guess which is which
            seen = sorted({str(v) for v in arr.tolist()})
            raise ValueError(
                f"{name} holds text {seen[:10]}, not 0/1 labels; write 1 for the anomaly "
                "value and 0 for the rest"
            )
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN labels; use 0 for unlabelled rows")
    bad = np.setdiff1d(np.unique(arr), [0, 1])
    if len(bad):
        raise ValueError(
            f"{name} has values outside {{0, 1}}: {bad[:10].tolist()} "
            "(0 = normal or unlabelled, 1 = anomaly)"
        )
    return arr.astype(np.int64)


def check_y(y, n_rows: int, name: str = "y") -> np.ndarray:
    """Training labels: 1 = known anomaly, 0 = normal or unlabelled; None = all unlabelled."""
    if y is None:
        return np.zeros(n_rows, dtype=np.int64)
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) != n_rows:
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n_rows},) to match X")
    return check_labels(arr, name)


def check_shape(X: np.ndarray, input_shape: tuple[int, ...], name: str = "X") -> None:
    """At scoring time: the rows must look like the rows the model was fitted on."""
    got = tuple(X.shape[1:])
    if got == tuple(input_shape):
        return
    if len(input_shape) == 1 and len(got) == 1:
        raise ValueError(
            f"{name} has {got[0]} features, but the model was fitted with {input_shape[0]}"
        )
    raise ValueError(f"{name} rows have shape {got}, but the model expects {tuple(input_shape)}")
