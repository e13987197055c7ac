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

Per input file and for the run: rows, PSI, the share above the model's calibrated
threshold (the `is_anomaly` flags, counted exactly) and the score quantiles
(`QUANTILES`). Quantiles need the scores, which a stream does not keep: each file and
the run keep a uniform sample of at most `SAMPLE` scores (the `SAMPLE` with the
smallest random keys, so a merge of batches stays uniform), exact up to that many rows
and within about 1/sqrt(SAMPLE) = 0.4 % of rank above: bounded memory, whatever a
file's size. The runs' history is `ede.scoring.history`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BINS = 10
DRIFT_THRESHOLD = 0.25  # PSI above this: a major shift, retrain (module docstring)
EPS = 1e-4
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SAMPLE = 65536  # scores kept per file (and for the run) for the quantiles


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


def quantile_key(q: float) -> str:
    """How a quantile is named in the summaries: "p1", "p50", "p99"."""
    return f"p{100 * q:g}"


@dataclass
class _Sample:
    """A uniform sample of at most SAMPLE of the scores seen: those with the smallest keys."""

    rng: np.random.Generator
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def add(self, scores: np.ndarray) -> None:
        keys = np.concatenate([self.keys, self.rng.random(len(scores))])
        values = np.concatenate([self.values, np.asarray(scores, np.float32)])
        if len(keys) > SAMPLE:
            keep = np.argpartition(keys, SAMPLE)[:SAMPLE]
            keys, values = keys[keep], values[keep]
        self.keys, self.values = keys, values

    def quantiles(self) -> dict[str, float]:
        if not len(self.values):
            return {}
        found = np.quantile(self.values.astype(np.float64), QUANTILES)
        return {quantile_key(q): float(v) for q, v in zip(QUANTILES, found, strict=True)}


@dataclass
class _Scores:
    """One file's scores (or the run's), as far as drift needs them."""

    edges: np.ndarray
    sample: _Sample
    counts: np.ndarray
    above: int = 0

    @classmethod
    def over(cls, edges: np.ndarray, seed: int) -> _Scores:
        return cls(edges, _Sample(np.random.default_rng(seed)), np.zeros(len(edges) + 1, np.int64))

    def add(self, scores: np.ndarray, flags: np.ndarray) -> None:
        bins = np.searchsorted(self.edges, np.asarray(scores, dtype=np.float64), side="right")
        self.counts += np.bincount(bins, minlength=len(self.counts))
        self.above += int(np.count_nonzero(flags))
        self.sample.add(scores)

    def summary(self) -> dict:
        rows = int(self.counts.sum())
        value = psi(self.counts)
        return {
            "rows": rows,
            "psi": value,
            "drifted": value > DRIFT_THRESHOLD,
            "above_threshold": self.above / rows if rows else None,
            "quantiles": self.sample.quantiles(),
            "bin_shares": (self.counts / max(rows, 1)).round(4).tolist(),
        }


@dataclass
class ScoreDrift:
    """A run's scores over the model's reference edges, per output file and overall."""

    edges: np.ndarray
    overall: _Scores
    files: dict[str, tuple[str, _Scores]] = field(default_factory=dict)  # name: (input, scores)

    @classmethod
    def for_edges(cls, edges: list[float]) -> ScoreDrift | None:
        """None for a model exported without reference edges (before they were recorded)."""
        if not edges:
            return None
        edges_ = np.asarray(edges, dtype=np.float64)
        return cls(edges_, _Scores.over(edges_, seed=0))

    def add(self, scores: np.ndarray, flags: np.ndarray, name: str = "", source: str = "") -> None:
        """One batch of `name`'s scores (the output file; `source` the input it reads)."""
        if name not in self.files:
            self.files[name] = (source, _Scores.over(self.edges, seed=len(self.files) + 1))
        self.files[name][1].add(scores, flags)
        self.overall.add(scores, flags)

    def summary(self) -> dict:
        """The run's figures (PSI as "value"), and the same per file under "files"."""
        overall = self.overall.summary()
        files = {n: {"input": src, **s.summary()} for n, (src, s) in self.files.items()}
        for entry in files.values():
            entry.pop("bin_shares")
        return {
            "statistic": "psi",
            "value": overall.pop("psi"),
            "threshold": DRIFT_THRESHOLD,
            **overall,
            "files": files,
        }
