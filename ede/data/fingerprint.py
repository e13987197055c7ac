"""Fingerprints of rows as the model saw them, so a split, a model folder and an artifact
can name the data they came from.

The hash covers float32 C-order features, then int64 labels, not file bytes: the same
rows hash alike whether they came as CSV, Parquet or an in-memory array.
"""

from __future__ import annotations

import hashlib

import numpy as np


def rows_sha256(X: np.ndarray, y: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()
