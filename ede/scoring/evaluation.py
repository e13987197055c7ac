"""Test metrics of exported artifacts: the graphs that ship are the ones judged.

The retraining flow compares a new model and the champion on the same test rows;
scoring both through onnxruntime (not through torch) means the comparison covers
the scaling and everything else baked into each graph, and a champion exported by
an older ede is judged exactly as it runs in production.

One pass, bounded memory: test.parquet can hold millions of rows, and reading it
whole once per model held several copies of it (bytes, pandas, float32) in the
flow's driver. Here it streams once, in the record batches batch scoring reads
(`ede.scoring.pipeline.record_batches`: one row group at a time), through every
artifact's session. What stays is what the metrics need of every row, since AUROC
ranks all the scores: a float32 score per artifact and an int8 label, 4 + 1 bytes a
row; flags are only counted. scikit-learn's curves then take their own transient
~70 bytes a row, one artifact at a time. For an image model whose curves are asked
for (a run's report), the 8 highest- and lowest-scored images are kept as well.

The checks are batch scoring's (`ede.scoring.inputs`): each model's columns matched
by name from its metadata, types and image sizes from the footer before the pass,
NaN/inf while streaming; labels by `ede.core.checks.check_labels`. A failure that is
one artifact's (its sha256, a column it needs missing or bad) becomes that
artifact's result, so a champion that cannot read these rows does not stop the
candidate; a failure of the table (missing, unreadable, empty, bad labels) raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ede.core.checks import check_labels
from ede.core.metrics import curves, evaluate
from ede.data.listing import arrow_fs
from ede.export.artifact import infer, read_model, session
from ede.scoring.batch import DEFAULT_BATCH_SIZE, table_format
from ede.scoring.inputs import Spec, check_schema, inspect, model_input
from ede.scoring.pipeline import record_batches
from ede.storage import shown_url

ARTIFACT_ERRORS = (ValueError, FileNotFoundError)  # an artifact cannot score these rows
BATCH_VALUES = 4 << 20  # float32 model inputs per batch (16 MiB): images get fewer rows


EXTREMES = 8  # images kept at each end of the score range, for the report's grid


@dataclass
class _Extremes:
    """The `EXTREMES` highest- and lowest-scored rows seen so far, with their images and
    labels: what the report's image grid shows, kept during the one pass in bounded
    memory (2 x EXTREMES images)."""

    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    image: np.ndarray | None = None

    def add(self, score: np.ndarray, label: np.ndarray, image: np.ndarray) -> None:
        if len(score) > 2 * EXTREMES:  # the batch's own ends first: no copy of its images
            ends = np.argsort(score, kind="stable")
            ends = np.r_[ends[:EXTREMES], ends[-EXTREMES:]]
            score, label, image = score[ends], label[ends], image[ends]
        scores = np.concatenate([self.score, score])
        labels = np.concatenate([self.label, label.astype(np.int8)])
        images = image if self.image is None else np.concatenate([self.image, image])
        order = np.argsort(scores, kind="stable")
        keep = order if len(order) <= 2 * EXTREMES else np.r_[order[:EXTREMES], order[-EXTREMES:]]
        self.score, self.label, self.image = scores[keep], labels[keep], images[keep]

    def summary(self) -> dict:
        """{"shape", "most": [...], "least": [...]}, each {"score", "label", "pixels"}."""
        order = np.argsort(self.score, kind="stable")
        n = min(EXTREMES, len(order) // 2)

        def rows(idx) -> list[dict]:
            return [
                {
                    "score": float(self.score[i]),
                    "label": int(self.label[i]),
                    "pixels": np.round(self.image[i].ravel().astype(np.float64), 4).tolist(),
                }
                for i in idx
            ]

        shape = [] if self.image is None else list(self.image.shape[1:])
        return {"shape": shape, "most": rows(order[::-1][:n]), "least": rows(order[:n])}


@dataclass
class _Judged:
    """One artifact during the pass: its session, its scores so far, its flags counted;
    for an image model whose curves are asked for, its extreme images."""

    spec: Spec
    sess: Any
    scores: list[np.ndarray] = field(default_factory=list)
    flagged: list[int] = field(default_factory=lambda: [0, 0])  # of normals, of anomalies
    extremes: _Extremes | None = None


def evaluate_artifacts(
    artifact_urls: Sequence[str],
    table_url: str,
    *,
    label_column: str = "label",
    threads: int = 1,
    required: int = 0,
    with_curves: bool = False,
) -> list[dict | Exception]:
    """Each artifact's metrics (`evaluate_artifact`'s dict) on one labelled table, read once;
    `with_curves` adds "curves" (`ede.core.metrics.curves`: what a report draws) and, for
    an image model, "extremes" (`_Extremes.summary`: its most and least anomalous rows).

    An artifact that cannot score these rows (ARTIFACT_ERRORS) gets its exception in
    place of metrics; the first `required` artifacts' errors are raised instead (a
    run that needs them has no use for the others' metrics).
    """
    results: list[Any] = [None] * len(artifact_urls)

    def fail(i: int, exc: Exception) -> None:
        if i < required:
            raise exc
        results[i] = exc

    live: dict[int, _Judged] = {}
    for i, url in enumerate(artifact_urls):
        try:
            graph, meta = read_model(url)  # sha256 checked first
            spec = Spec(list(meta["feature_names"]), tuple(meta["input_shape"]))
            keep = _Extremes() if with_curves and spec.is_image else None
            live[i] = _Judged(spec, session(graph, threads), extremes=keep)
        except ARTIFACT_ERRORS as exc:
            fail(i, exc)
    if not live:
        return results
    afs, path, _ = arrow_fs(table_url)
    shown, fmt = shown_url(table_url), table_format(path)
    schema, _ = inspect(afs, path, shown, fmt)  # the footer: a table's errors raise
    for i, judged in list(live.items()):
        try:
            check_schema(schema, judged.spec, shown, id_columns=[])
            if label_column in judged.spec.inputs:
                raise ValueError(f"{shown}: label column '{label_column}' requested as a feature")
        except ValueError as exc:
            del live[i]
            fail(i, exc)
    if not live:
        return results
    label = label_column if label_column in schema.names else None  # absent: all 0
    columns, rows = _reads(live, label)
    labels = _stream(record_batches(afs, path, shown, fmt, columns, rows), label, shown, live, fail)
    for i in sorted(live):
        judged = live.pop(i)
        score = np.concatenate(judged.scores)
        judged.scores.clear()  # one artifact's curves at a time
        results[i] = _metrics(labels, score, judged.flagged)
        if with_curves:
            results[i]["curves"] = curves(labels, score)
            if judged.extremes is not None:
                results[i]["extremes"] = judged.extremes.summary()
        del score
    return results


def evaluate_artifact(
    artifact_url: str, table_url: str, *, label_column: str = "label", threads: int = 1
) -> dict:
    """AUROC/AUPRC (NaN without labelled anomalies) and flag counts on a labelled table."""
    (metrics,) = evaluate_artifacts(
        [artifact_url], table_url, label_column=label_column, threads=threads, required=1
    )
    return metrics


def _reads(live: dict[int, _Judged], label: str | None) -> tuple[list[str], int]:
    """The columns every live artifact needs (each once) and the rows a batch holds."""
    wanted = [c for judged in live.values() for c in judged.spec.inputs]
    columns = list(dict.fromkeys(wanted + ([label] if label else [])))
    widest = max(int(np.prod(judged.spec.input_shape)) for judged in live.values())
    return columns, max(1, min(DEFAULT_BATCH_SIZE, BATCH_VALUES // widest))


def _stream(
    batches: Iterable[pa.RecordBatch],
    label: str | None,
    shown: str,
    live: dict[int, _Judged],
    fail: Callable[[int, Exception], None],
) -> np.ndarray:
    """The one pass: every live artifact scores each batch; returns the labels (int8).
    An artifact whose columns turn out bad (NaN, inf, a wrong image size) leaves `live`."""
    labels: list[np.ndarray] = []
    done = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        if label is None:
            y = np.zeros(batch.num_rows, np.int64)
        else:
            values = batch.column(label).to_numpy(zero_copy_only=False)
            y = check_labels(values, f"{shown}: label column '{label}'")
        anomaly = y == 1
        for i, judged in list(live.items()):
            try:
                X = model_input(batch, judged.spec, shown, done)
            except ValueError as exc:
                del live[i]
                fail(i, exc)
                continue
            score, flag = infer(judged.sess, X)
            judged.scores.append(np.asarray(score, np.float32))
            judged.flagged[0] += int(flag[~anomaly].sum())
            judged.flagged[1] += int(flag[anomaly].sum())
            if judged.extremes is not None:
                judged.extremes.add(np.asarray(score, np.float32), y, X)
        labels.append(y.astype(np.int8))
        done += batch.num_rows
        if not live:
            break
    return np.concatenate(labels) if labels else np.zeros(0, np.int8)


def _metrics(y: np.ndarray, score: np.ndarray, flagged: list[int]) -> dict:
    anomalies = int(y.sum())
    normals = len(y) - anomalies
    return {
        **evaluate(y, score),
        "rows": int(len(y)),
        "labelled_anomalies": anomalies,
        "flagged": flagged[0] + flagged[1],
        "recall_at_threshold": flagged[1] / anomalies if anomalies else None,
        "fpr_at_threshold": flagged[0] / normals if normals else None,
    }
