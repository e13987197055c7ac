"""Labels that arrive after the data: a separate table of (id, label), joined by id.

Confirmed anomalies (a chargeback, an incident report) come days after the rows they
label, and nobody rewrites last week's partitions for them. So a retrain may take a
labels table beside the data: a row whose id is in it takes that label; every other
row keeps its own label column (or 0, unlabelled, when the data have none). The
labels table is small (labelled events, not rows) and is read whole, once, where the
data are read; the joined labels are what the fingerprint and the split see, so new
labels make new prepared splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ede.core.checks import check_labels
from ede.data.columns import label_present
from ede.data.tables import read_frame
from ede.storage import shown_url


@dataclass(frozen=True)
class LabelJoin:
    """Where the late labels are and how they join: what a run is given (plain, picklable)."""

    url: str
    id_column: str

    def load(self, label_column: str) -> LateLabels:
        frame = read_frame(self.url)
        where = shown_url(self.url)
        for column in (self.id_column, label_column):
            if column not in frame.columns:
                raise ValueError(
                    f"{where}: no column '{column}' (columns {sorted(map(str, frame.columns))}); "
                    f"a labels table holds the id column and '{label_column}'"
                )
        labels = check_labels(frame[label_column].to_numpy(), f"{where}: column '{label_column}'")
        index = pd.Index(frame[self.id_column])
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise ValueError(f"{where}: id {dup!r} appears more than once")
        return LateLabels(self.id_column, index, labels.astype(np.int64))


@dataclass(frozen=True)
class LateLabels:
    id_column: str
    ids: pd.Index
    labels: np.ndarray

    def apply(self, ids, own: np.ndarray | None) -> np.ndarray:
        """The batch's labels: the late label where its id has one, else its own (or 0)."""
        pos = self.ids.get_indexer(pd.Index(ids))
        y = np.zeros(len(pos), np.int64) if own is None else np.asarray(own, np.int64).copy()
        found = pos >= 0
        y[found] = self.labels[pos[found]]
        return y


def label_column_needed(late: LateLabels | None, columns, label_column, where) -> bool:
    """Whether the data carry their own label column: required without late labels
    (`ede.data.columns.label_present`), optional with them (the labels may all come late)."""
    if late is None:
        return label_present(columns, label_column, where)
    return label_column is not None and label_column in columns
