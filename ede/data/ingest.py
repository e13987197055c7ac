"""Ingest: from a user's table(s) to train/test splits that Ray workers read from storage.

A retraining pipeline must answer "was this model trained on the same data as the
last one?" and must never let its test rows leak into training. So the rows are
fingerprinted by content (the same rows in CSV or Parquet hash alike), split once
(stratified, seeded), and written under a prefix named after the fingerprint and
the split settings: a second run on the same data reuses the same splits, hence
compares a new model and the champion on the very same test rows.

Layout under ``<storage>/prepared/<key>/``: ``train.parquet`` (the fit rows,
shuffled, then the validation rows: the row range is in the manifest, so Ray Train
skips them and Tune ranks trials on them), ``test.parquet`` and ``manifest.json``,
written last, the marker of a complete prefix. The manifest also records the row
groups (and their rule) and the scaler, fitted once here on the fit rows.

Data may be one file, a folder/prefix or a glob of files with the same columns, or
a folder holding ``train/``, ``test/`` and optionally ``val/``: splits given by the
user, used as they are.

Memory stays bounded whatever the table's size: the input streams twice in record
batches (`ede.data.batches`). The first pass checks every batch, fingerprints it and
keeps the label column (1 byte a row); the split is decided from the labels alone;
the second pass writes the splits (`ede.data.split_writer`: the row-group rule, the
shuffle of the fit rows through a local spill, the scaler).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import fsspec
import numpy as np

from ede.data import split_rules, split_writer
from ede.data.batches import Source, batches, list_sources
from ede.data.late_labels import LabelJoin, LateLabels
from ede.data.window import DataWindow, partition_day
from ede.storage import shown_url, storage_error, transient, write_bytes_atomic

MANIFEST = "manifest.json"
GIVEN_SPLITS = ("train", "val", "test")
LAYOUT = 2  # prepared/ layout version, part of the key: row groups, scaler, footer


@dataclass(frozen=True)
class SplitSettings:
    label_column: str = "label"
    test_fraction: float = 0.25
    validation_fraction: float = 0.2
    seed: int = 0
    min_rows: int = 50

    def check(self) -> None:
        for name in ("test_fraction", "validation_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: must be in (0, 1)")
        if self.min_rows < 2:
            raise ValueError(f"min_rows={self.min_rows}: must be >= 2")


@dataclass(frozen=True)
class PreparedSplits:
    """Where the splits are and what they hold; `to_dict`/`from_dict` round-trip via JSON."""

    root: str
    data_sha256: str
    feature_names: list[str]
    label_column: str
    rows: dict[str, int]  # fit, validation, test
    labelled: dict[str, int]  # labelled anomalies per split
    source: str
    settings: dict = field(default_factory=dict)
    given_splits: bool = False
    reused: bool = False
    scaler: dict | None = None  # kind, offset, scale, fit_rows, sample_rows, seed
    row_groups: dict = field(default_factory=dict)  # rule, max_group_rows, sizes
    window: dict | None = None  # `ede.data.window.DataWindow.to_dict()`; None: every file
    late_labels: dict | None = None  # url, id_column, rows of a labels table joined by id
    partitions: list[str] = field(default_factory=list)  # the date= days read, if a window

    @property
    def row_group_rows(self) -> int | None:
        """The most rows a row group of train.parquet or test.parquet holds (G of the rule)."""
        return self.row_groups.get("max_group_rows")

    @property
    def train_url(self) -> str:
        return f"{self.root}/train.parquet"

    @property
    def test_url(self) -> str:
        return f"{self.root}/test.parquet"

    @property
    def validation_rows(self) -> np.ndarray:
        """Row indices of the validation split inside train.parquet."""
        start = self.rows["fit"]
        return np.arange(start, start + self.rows["validation"], dtype=np.int64)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "reused"}

    @classmethod
    def from_dict(cls, d: dict, reused: bool = False) -> PreparedSplits:
        return cls(**{**d, "reused": reused})


def check_sources(
    data_url: str,
    settings: SplitSettings,
    window: DataWindow | None = None,
    join: LabelJoin | None = None,
) -> None:
    """The checks that need schemas only (listing, Parquet footers, a CSV's first block):
    a missing file, a non-numeric or mismatched column. A caller that starts a cluster
    for the whole pass (the retraining flow) runs these first, so bad input fails in a
    second, with one line, before anything starts; `prepare_splits` repeats them."""
    settings.check()
    late = join.load(settings.label_column) if join is not None else None
    _list_parts(data_url, settings.label_column, window, late)


def prepare_splits(
    data_url: str,
    storage_url: str,
    settings: SplitSettings,
    window: DataWindow | None = None,
    join: LabelJoin | None = None,
) -> PreparedSplits:
    """Read, validate, fingerprint and split `data_url` (only its date= partitions inside
    `window`, if given: `ede.data.window`; labels joined from `join`'s table where it has
    them: `ede.data.late_labels`); write the splits under `storage_url`."""
    settings.check()
    late = join.load(settings.label_column) if join is not None else None
    parts, given = _list_parts(data_url, settings.label_column, window, late)
    days = sorted(
        {d.isoformat() for ss in parts.values() for s in ss if (d := partition_day(s.url))}
    )
    names = list(next(iter(parts.values()))[0].feature_names)
    labels, digests = {}, {}
    for part, sources in parts.items():  # pass 1: check, fingerprint, labels
        labels[part], digests[part] = _scan(sources)
    n_rows = sum(len(y) for y in labels.values())
    if n_rows < settings.min_rows:
        raise ValueError(
            f"{shown_url(data_url)}: {n_rows} rows; at least {settings.min_rows} needed"
        )
    digest = hashlib.sha256(json.dumps([names, settings.label_column]).encode())
    for k in sorted(parts):
        digest.update(k.encode() + digests[k].encode())
    data_sha = digest.hexdigest()
    codes = split_rules.assign_splits(labels, given, settings)
    y = labels["all"] if len(labels) == 1 else np.concatenate([labels[k] for k in parts])
    if split_rules.unlabelled_fit_rows(codes, y) == 0:
        raise ValueError(f"{shown_url(data_url)}: no unlabelled (label 0) rows to train on")
    del labels, y
    recipe = {k: v for k, v in asdict(settings).items() if k != "min_rows"} if not given else {}
    key = hashlib.sha256(
        json.dumps([data_sha, {**recipe, "layout": LAYOUT}], sort_keys=True).encode()
    ).hexdigest()
    root = f"{storage_url.rstrip('/')}/prepared/{key[:16]}"
    existing = _read_manifest(root)
    if existing is not None:  # the same rows: the same splits, whichever window chose them
        return PreparedSplits.from_dict(existing, reused=True)

    def stream():  # pass 2, in the order `codes` follows
        for sources in parts.values():
            for source in sources:
                yield from batches(source)

    written = split_writer.write_splits(
        stream,
        codes,
        names,
        settings.label_column,
        f"{root}/train.parquet",
        f"{root}/test.parquet",
        settings.seed,
    )
    prepared = PreparedSplits(
        root=root,
        data_sha256=data_sha,
        feature_names=names,
        label_column=settings.label_column,
        rows=written.rows,
        labelled=written.labelled,
        source=shown_url(data_url),
        settings=asdict(settings),
        given_splits=given,
        scaler=written.scaler,
        row_groups=written.row_groups,
        window=window.to_dict() if window is not None and window.active else None,
        partitions=days if window is not None and window.active else [],
        late_labels=None
        if join is None or late is None
        else {"url": shown_url(join.url), "id_column": join.id_column, "rows": len(late.ids)},
    )
    write_bytes_atomic(f"{root}/{MANIFEST}", json.dumps(prepared.to_dict(), indent=2).encode())
    return prepared


def load_prepared(root: str) -> PreparedSplits:
    manifest = _read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"{shown_url(root)}/{MANIFEST}: no prepared splits there")
    return PreparedSplits.from_dict(manifest, reused=True)


def _read_manifest(root: str) -> dict | None:
    try:
        with fsspec.open(f"{root}/{MANIFEST}", "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _list_parts(
    data_url: str,
    label_column: str,
    window: DataWindow | None = None,
    late: LateLabels | None = None,
) -> tuple[dict[str, list[Source]], bool]:
    """{"all": files} for one table or many files; {"train", ["val"], "test"} when given."""
    fs, path = fsspec.core.url_to_fs(data_url)
    try:
        is_dir = fs.isdir(path)
    except Exception as exc:  # every backend fails in its own types
        # An outage or throttling keeps its kind (one line for what an operator fixes):
        # as a ValueError, a bad-input error, the retrain flow's retries would give up.
        failed = storage_error(exc, data_url, "read")
        if failed is not None:
            raise failed from None
        if transient(exc):
            raise
        raise ValueError(f"{shown_url(data_url)}: cannot reach the data: {exc}") from None
    parts, given = {"all": None}, False
    if is_dir:
        children = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
        if {"train", "test"} <= children:
            parts = {name: None for name in GIVEN_SPLITS if name in children}
            given = True
    for name in parts:
        url = f"{data_url.rstrip('/')}/{name}" if given else data_url
        parts[name] = list_sources(url, label_column, window, late)
    first = next(iter(parts.values()))[0]
    for name, sources in parts.items():
        if sources[0].feature_names != first.feature_names:
            raise ValueError(
                f"{shown_url(sources[0].url)}: columns {list(sources[0].feature_names)} differ "
                f"from {shown_url(first.url)}'s {list(first.feature_names)} (split '{name}')"
            )
    return parts, given


def _scan(sources: list[Source]) -> tuple[np.ndarray, str]:
    """Labels (int8; 0 where the column is absent) and `rows_sha256` of one part's rows,
    batch by batch: float32 features in row order, then int64 labels."""
    h, labels, n = hashlib.sha256(), [], 0
    for source in sources:
        for X, y in batches(source):
            h.update(memoryview(np.ascontiguousarray(X)).cast("B"))
            labels.append(np.zeros(len(X), np.int8) if y is None else y.astype(np.int8))
            n += len(X)
    y = np.concatenate(labels)
    del labels
    for start in range(0, n, 1 << 18):
        h.update(y[start : start + (1 << 18)].astype(np.int64))
    return y, h.hexdigest()
