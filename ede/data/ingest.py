"""Ingest: from a user's table(s) to train/test splits that Ray workers read from storage.

A retraining pipeline must answer "was this model trained on the same data as the
last one?" and must never let its test rows leak into training. So the rows are
fingerprinted by content (the same rows in CSV or Parquet hash alike), split once
(stratified, seeded), and written under a prefix named after the fingerprint and
the split settings: a second run on the same data reuses the same splits, hence
compares a new model and the champion on the very same test rows.

Layout under ``<storage>/prepared/<key>/``: ``train.parquet`` (the fit rows, then
the validation rows: the row range is in the manifest, so Ray Train skips them and
Tune ranks trials on them), ``test.parquet`` and ``manifest.json``, written last,
the marker of a complete prefix.

Data may be one file, a folder/prefix or a glob of files with the same columns, or
a folder holding ``train/``, ``test/`` and optionally ``val/``: splits given by the
user, used as they are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import fsspec
import numpy as np
import pandas as pd

from ede.data.fingerprint import rows_sha256
from ede.data.listing import list_files
from ede.data.protocol import validation_split
from ede.data.tables import SUFFIXES, Table, read_table, write_table
from ede.storage import shown_url, write_bytes_atomic

MANIFEST = "manifest.json"
GIVEN_SPLITS = ("train", "val", "test")


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


def prepare_splits(data_url: str, storage_url: str, settings: SplitSettings) -> PreparedSplits:
    """Read, validate, fingerprint and split `data_url`; write the splits under `storage_url`."""
    settings.check()
    parts, given = _read_parts(data_url, settings.label_column)
    first = next(iter(parts.values()))
    names = first.feature_names
    for name, part in parts.items():
        if part.feature_names != names:
            raise ValueError(
                f"{shown_url(part.source)}: columns {part.feature_names} differ from "
                f"{shown_url(first.source)}'s {names} (split '{name}')"
            )
    labels = {k: _labels(t) for k, t in parts.items()}
    n_rows = sum(len(t.X) for t in parts.values())
    if n_rows < settings.min_rows:
        raise ValueError(
            f"{shown_url(data_url)}: {n_rows} rows; at least {settings.min_rows} needed"
        )
    digest = hashlib.sha256(json.dumps([names, settings.label_column]).encode())
    for k in sorted(parts):
        digest.update(k.encode() + rows_sha256(parts[k].X, labels[k]).encode())
    data_sha = digest.hexdigest()
    splits = _split(parts, labels, given, settings)
    if (splits["fit"][1] == 0).sum() == 0:
        raise ValueError(f"{shown_url(data_url)}: no unlabelled (label 0) rows to train on")
    recipe = {k: v for k, v in asdict(settings).items() if k != "min_rows"} if not given else {}
    key = hashlib.sha256(json.dumps([data_sha, recipe], sort_keys=True).encode()).hexdigest()
    root = f"{storage_url.rstrip('/')}/prepared/{key[:16]}"
    existing = _read_manifest(root)
    if existing is not None:
        return PreparedSplits.from_dict(existing, reused=True)
    prepared = PreparedSplits(
        root=root,
        data_sha256=data_sha,
        feature_names=list(names),
        label_column=settings.label_column,
        rows={k: int(len(v[1])) for k, v in splits.items()},
        labelled={k: int(v[1].sum()) for k, v in splits.items()},
        source=shown_url(data_url),
        settings=asdict(settings),
        given_splits=given,
    )
    # Fit rows shuffled: Ray workers read contiguous ranges, and a table sorted by label
    # would hand one worker all the labelled anomalies.
    order = np.random.default_rng(settings.seed).permutation(len(splits["fit"][1]))
    splits["fit"] = (splits["fit"][0][order], splits["fit"][1][order])
    train = _frame(
        np.concatenate([splits["fit"][0], splits["validation"][0]]),
        np.concatenate([splits["fit"][1], splits["validation"][1]]),
        names,
        settings.label_column,
    )
    write_table(train, prepared.train_url, label_column=settings.label_column)
    test = _frame(*splits["test"], names, settings.label_column)
    write_table(test, prepared.test_url, label_column=settings.label_column)
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


def _read_parts(data_url: str, label_column: str) -> tuple[dict[str, Table], bool]:
    """{"all": table} for one table or many files; {"train", "test", ["val"]} when given."""
    fs, path = fsspec.core.url_to_fs(data_url)
    try:
        is_dir = fs.isdir(path)
    except Exception as exc:  # every backend fails in its own types
        raise ValueError(f"{shown_url(data_url)}: cannot reach the data: {exc}") from None
    if is_dir:
        children = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
        if {"train", "test"} <= children:
            parts = {}
            for name in GIVEN_SPLITS:
                if name in children:
                    parts[name] = _read_many(f"{data_url.rstrip('/')}/{name}", label_column)
            return parts, True
    return {"all": _read_many(data_url, label_column)}, False


def _read_many(url: str, label_column: str) -> Table:
    """One table from a file, or the row-wise union of a folder's or a glob's tables."""
    fs, paths = list_files(url, SUFFIXES)
    if len(paths) == 1 and fs.isfile(fsspec.core.url_to_fs(url)[1]):
        return read_table(url, label_column=label_column)
    tables = [read_table(fs.unstrip_protocol(p), label_column=label_column) for p in paths]
    names = tables[0].feature_names
    for t in tables[1:]:
        if t.feature_names != names:
            raise ValueError(
                f"{shown_url(t.source)}: columns {t.feature_names} differ from "
                f"{shown_url(tables[0].source)}'s {names}"
            )
    labelled = [t.y is not None for t in tables]
    if any(labelled) and not all(labelled):
        bare = tables[labelled.index(False)].source
        raise ValueError(f"{shown_url(bare)}: no '{label_column}' column, unlike the other files")
    y = np.concatenate([t.y for t in tables]) if all(labelled) else None
    return Table(np.concatenate([t.X for t in tables]), y, names, url)


def _labels(t: Table) -> np.ndarray:
    return t.y if t.y is not None else np.zeros(len(t.X), dtype=np.int64)


def _split(parts, labels, given: bool, s: SplitSettings) -> dict[str, tuple]:
    """(X, y) of fit, validation and test: the user's splits, else stratified and seeded."""
    if given:
        X_tr, y_tr = parts["train"].X, labels["train"]
        if "val" in parts:
            fit, val = (X_tr, y_tr), (parts["val"].X, labels["val"])
        else:
            X_fit, y_fit, X_val, y_val = validation_split(
                X_tr, y_tr, fraction=s.validation_fraction, seed=s.seed
            )
            fit, val = (X_fit, y_fit), (X_val, y_val)
        return {"fit": fit, "validation": val, "test": (parts["test"].X, labels["test"])}
    X, y = parts["all"].X, labels["all"]
    X_tr, y_tr, X_te, y_te = validation_split(X, y, fraction=s.test_fraction, seed=s.seed)
    X_fit, y_fit, X_val, y_val = validation_split(
        X_tr, y_tr, fraction=s.validation_fraction, seed=s.seed + 1
    )
    return {"fit": (X_fit, y_fit), "validation": (X_val, y_val), "test": (X_te, y_te)}


def _frame(X: np.ndarray, y: np.ndarray, names: list[str], label: str) -> pd.DataFrame:
    if label in names:
        raise ValueError(f"label column '{label}' clashes with a feature name")
    frame = pd.DataFrame(X, columns=names)
    frame[label] = y.astype(np.int64)
    return frame
