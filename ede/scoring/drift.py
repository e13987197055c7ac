"""How far a scoring batch's scores moved from the model's own validation scores: PSI.

A detector is retrained on a schedule, but the data can move between schedules; the
scores say so first. The statistic is the population stability index over ten bins,
the deciles of the model's validation scores on its unlabelled rows (the rows most
like what arrives unlabelled in production), recorded at export in metadata.json:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

with e_i = 0.1 by construction and a_i the batch's share in bin i. Why PSI: it needs
only the nine edges (no reference sample travels with the model), it accumulates in
one streaming pass (counts per bin), and it has a conventional reading that the
operators of scoring systems already use: below 0.1 no shift, 0.1 to 0.25 a moderate
one, above 0.25 a major one. ede calls for a retrain above `DRIFT_THRESHOLD` = 0.25.
Empty bins are smoothed (`EPS`) so one empty bin does not make the index infinite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 10
DRIFT_THRESHOLD = 0.25  # PSI above this: a major shift, retrain (module docstring)
EPS = 1e-4


def reference_edges(scores: np.ndarray) -> list[float]:
    """The interior decile edges of `scores` (the validation rows' scores, unlabelled ones)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < BINS:
        return []
    return [float(e) for e in np.quantile(scores, np.arange(1, BINS) / BINS)]


def psi(counts: np.ndarray) -> float:
    """PSI of bin `counts` against equal reference shares (the deciles)."""
    counts = np.asarray(counts, dtype=np.float64)
    actual = np.maximum(counts / max(counts.sum(), 1.0), EPS)
    expected = np.full(len(counts), 1.0 / len(counts))
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass
class ScoreDrift:
    """Bin counts of a batch's scores over the model's reference edges, batch by batch."""

    edges: np.ndarray
    counts: np.ndarray

    @classmethod
    def for_edges(cls, edges: list[float]) -> ScoreDrift | None:
        """None for a model exported without reference edges (before they were recorded)."""
        if not edges:
            return None
        return cls(np.asarray(edges, dtype=np.float64), np.zeros(len(edges) + 1, np.int64))

    def add(self, scores: np.ndarray) -> None:
        bins = np.searchsorted(self.edges, np.asarray(scores, dtype=np.float64), side="right")
        self.counts += np.bincount(bins, minlength=len(self.counts))

    def summary(self) -> dict:
        value = psi(self.counts)
        return {
            "statistic": "psi",
            "value": value,
            "threshold": DRIFT_THRESHOLD,
            "drifted": value > DRIFT_THRESHOLD,
            "rows": int(self.counts.sum()),
            "bin_shares": (self.counts / max(int(self.counts.sum()), 1)).round(4).tolist(),
        }
