"""Ingest: validation, content fingerprints, stratified splits, given splits, reuse; the
row-group rule, the recorded scaler and bounded memory of the streaming passes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ede.core.scaling import QuantileMinMaxScaler
from ede.data.fingerprint import rows_sha256
from ede.data.ingest import SplitSettings, load_prepared, prepare_splits
from ede.data.parquet_layout import SCALER_KEY
from ede.data.protocol import validation_split


def _frame(n_normal=200, n_anomaly=20, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(n_normal, 4)), rng.normal(3, 1, (n_anomaly, 4))])
    frame = pd.DataFrame(X.astype(np.float32), columns=list("abcd"))
    frame["label"] = np.r_[np.zeros(n_normal), np.ones(n_anomaly)].astype(np.int64)
    return frame


def test_splits_are_disjoint_stratified_and_reused(tmp_path):
    frame = _frame()
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    p = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "store"), SplitSettings())
    assert not p.reused
    assert sum(p.rows.values()) == 220
    assert p.rows["test"] == 55 and p.labelled["test"] == 5  # 25% of each class
    assert p.labelled["validation"] >= 1 and p.labelled["fit"] >= 1
    train, test = pd.read_parquet(p.train_url), pd.read_parquet(p.test_url)
    assert len(train) == p.rows["fit"] + p.rows["validation"]
    seen = {tuple(r) for r in train[list("abcd")].to_numpy()}
    assert not seen & {tuple(r) for r in test[list("abcd")].to_numpy()}
    val = train.iloc[p.validation_rows]
    assert int(val["label"].sum()) == p.labelled["validation"]
    again = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "store"), SplitSettings())
    assert again.reused and again.root == p.root and again.to_dict() == p.to_dict()
    assert load_prepared(p.root).data_sha256 == p.data_sha256


def test_fingerprint_follows_content_not_format(tmp_path):
    frame = _frame()
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_csv(tmp_path / "t.csv", index=False)
    a = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings())
    b = prepare_splits(str(tmp_path / "t.csv"), str(tmp_path / "s"), SplitSettings())
    assert a.data_sha256 == b.data_sha256 and a.root == b.root
    frame.loc[0, "a"] += 1.0
    frame.to_parquet(tmp_path / "t2.parquet", index=False)
    c = prepare_splits(str(tmp_path / "t2.parquet"), str(tmp_path / "s"), SplitSettings())
    assert c.data_sha256 != a.data_sha256 and c.root != a.root
    d = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings(seed=1))
    assert d.data_sha256 == a.data_sha256 and d.root != a.root  # other split, other prefix


def test_folder_of_files_and_given_splits(tmp_path):
    frame = _frame()
    (tmp_path / "many").mkdir()
    frame.iloc[:100].to_parquet(tmp_path / "many" / "part-0.parquet", index=False)
    frame.iloc[100:].to_parquet(tmp_path / "many" / "part-1.parquet", index=False)
    p = prepare_splits(str(tmp_path / "many"), str(tmp_path / "s"), SplitSettings())
    assert sum(p.rows.values()) == 220 and not p.given_splits
    for name, part in (("train", frame.iloc[:150]), ("val", frame.iloc[150:170])):
        (tmp_path / "given" / name).mkdir(parents=True)
        part.to_parquet(tmp_path / "given" / name / "x.parquet", index=False)
    (tmp_path / "given" / "test").mkdir()
    frame.iloc[170:].to_csv(tmp_path / "given" / "test" / "x.csv", index=False)
    g = prepare_splits(str(tmp_path / "given"), str(tmp_path / "s"), SplitSettings())
    assert g.given_splits
    assert g.rows == {"fit": 150, "validation": 20, "test": 50}
    assert g.labelled == {"fit": 0, "validation": 0, "test": 20}


def test_bad_input_names_the_problem_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        prepare_splits(str(tmp_path / "missing.parquet"), str(store), SplitSettings())
    frame = _frame()
    frame["kind"] = "x"
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    with pytest.raises(ValueError, match="'kind' is not numeric"):
        prepare_splits(str(tmp_path / "s.parquet"), str(store), SplitSettings())
    frame = _frame()
    frame.loc[3, "b"] = np.nan
    frame.to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(ValueError, match="'b' has 1 NaN"):
        prepare_splits(str(tmp_path / "n.csv"), str(store), SplitSettings())
    _frame().iloc[:30].to_parquet(tmp_path / "few.parquet", index=False)
    with pytest.raises(ValueError, match="30 rows; at least 50"):
        prepare_splits(str(tmp_path / "few.parquet"), str(store), SplitSettings())
    (tmp_path / "mixed").mkdir()
    _frame().to_parquet(tmp_path / "mixed" / "a.parquet", index=False)
    _frame().rename(columns={"d": "e"}).to_parquet(tmp_path / "mixed" / "b.parquet", index=False)
    with pytest.raises(ValueError, match="b.parquet: columns"):
        prepare_splits(str(tmp_path / "mixed"), str(store), SplitSettings())
    with pytest.raises(ValueError, match="test_fraction"):
        prepare_splits(str(tmp_path / "s.parquet"), str(store), SplitSettings(test_fraction=1.0))
    assert not store.exists()


def test_manifest_is_json_with_the_fingerprint(tmp_path):
    _frame().to_parquet(tmp_path / "t.parquet", index=False)
    p = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings())
    manifest = json.loads(
        (tmp_path / "s" / p.root.rsplit("/s/", 1)[1] / "manifest.json").read_text()
    )
    assert manifest["data_sha256"] == p.data_sha256 and manifest["feature_names"] == list("abcd")


# ----------------------------------------------------------------------------- streaming


def _sorted_frame(n=6000, d=4, seed=0) -> pd.DataFrame:
    """Sorted by label: the labelled anomalies are the last rows of the table."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, d)).astype(np.float32), columns=list("abcd")[:d])
    frame["label"] = (np.arange(n) >= n - n // 50).astype(np.int64)
    return frame


def test_split_is_validation_split_seeded_and_fit_rows_shuffled(tmp_path):
    frame = _sorted_frame()
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    p = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings(seed=4))
    X, y = frame[list("abcd")].to_numpy(), frame["label"].to_numpy()
    X_tr, y_tr, X_te, _ = validation_split(X, y, fraction=0.25, seed=4)  # test first
    X_fit, y_fit, X_val, _ = validation_split(X_tr, y_tr, fraction=0.2, seed=5)
    train, test = pd.read_parquet(p.train_url), pd.read_parquet(p.test_url)
    np.testing.assert_array_equal(test[list("abcd")].to_numpy(), X_te)  # the in-memory rows
    fit = train.iloc[: p.rows["fit"]]
    np.testing.assert_array_equal(train.iloc[p.validation_rows][list("abcd")].to_numpy(), X_val)
    order = np.random.default_rng(4).permutation(len(X_fit))  # the seeded shuffle
    np.testing.assert_array_equal(fit[list("abcd")].to_numpy(), X_fit[order])
    np.testing.assert_array_equal(fit["label"].to_numpy(), y_fit[order])
    half = len(fit) // 2  # a label-sorted table still gives both halves labelled anomalies
    assert fit["label"].iloc[:half].sum() > 0 and fit["label"].iloc[half:].sum() > 0
    other = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings())
    assert other.root != p.root
    assert not pd.read_parquet(other.test_url).equals(test)


def test_row_groups_follow_the_rule_and_the_scaler_is_recorded(tmp_path):
    frame = _sorted_frame(n=30000)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    p = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings())
    n_fit, n_val = p.rows["fit"], p.rows["validation"]
    meta = pq.ParquetFile(p.train_url).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    n_groups = p.row_groups["fit_groups"]
    assert n_groups == 16 and sizes == p.row_groups["train"]  # 18,000 fit rows: 16 groups
    bounds = np.cumsum([0, *sizes[:n_groups]])
    np.testing.assert_array_equal(bounds, np.arange(n_groups + 1) * n_fit // n_groups)
    assert sum(sizes[n_groups:]) == n_val  # validation rows in groups of their own
    assert "power of two" in p.row_groups["rule"] and p.row_group_rows == 65536
    fit = pd.read_parquet(p.train_url).iloc[:n_fit][list("abcd")].to_numpy()
    expected = QuantileMinMaxScaler().fit(fit)  # every fit row: fewer than QUANTILE_SAMPLE
    np.testing.assert_array_equal(np.float32(p.scaler["offset"]), expected.offset_)
    np.testing.assert_array_equal(np.float32(p.scaler["scale"]), expected.scale_)
    footer = json.loads(meta.metadata[SCALER_KEY.encode()])
    assert footer == p.scaler and p.scaler["kind"] == "quantile_minmax"
    assert load_prepared(p.root).to_dict() == p.to_dict()


def _dictionary_encoded(url: str) -> dict[str, bool]:
    """Per column of a Parquet file: does its first row group carry a dictionary page?"""
    group = pq.ParquetFile(url).metadata.row_group(0)
    columns = (group.column(j) for j in range(group.num_columns))
    return {c.path_in_schema: c.has_dictionary_page for c in columns}


def test_splits_store_float_features_without_a_dictionary(tmp_path):
    """A dictionary on float features only fills, falls back and costs time and bytes
    (ede.data.parquet_encoding); the label keeps one. pyarrow's default gives all one."""
    frame = _sorted_frame(n=30000)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    assert all(_dictionary_encoded(str(tmp_path / "t.parquet")).values())  # the default
    p = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "s"), SplitSettings())
    expected = {"a": False, "b": False, "c": False, "d": False, "label": True}
    assert _dictionary_encoded(p.train_url) == expected
    assert _dictionary_encoded(p.test_url) == expected


def test_csv_and_parquet_give_the_same_files(tmp_path):
    frame = _frame()
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_csv(tmp_path / "t.csv", index=False)
    a = prepare_splits(str(tmp_path / "t.parquet"), str(tmp_path / "a"), SplitSettings())
    b = prepare_splits(str(tmp_path / "t.csv"), str(tmp_path / "b"), SplitSettings())
    rows = rows_sha256(frame[list("abcd")].to_numpy(), frame["label"].to_numpy())
    whole = hashlib.sha256(json.dumps([list("abcd"), "label"]).encode() + b"all" + rows.encode())
    assert a.data_sha256 == b.data_sha256 == whole.hexdigest()  # batch by batch == in memory
    for url in ("train_url", "test_url"):
        assert pd.read_parquet(getattr(a, url)).equals(pd.read_parquet(getattr(b, url)))
    assert a.scaler == b.scaler


def test_a_bad_value_deep_in_a_file_names_file_column_and_row(tmp_path, monkeypatch):
    monkeypatch.setattr("ede.data.batches.BATCH_BYTES", 1024 * 4 * 4)  # 1,024-row batches
    frame = _sorted_frame(n=5000)
    frame.loc[4321, "c"] = np.inf
    frame.to_csv(tmp_path / "deep.csv", index=False)
    with pytest.raises(ValueError, match=r"deep.csv: feature column 'c' has 1 NaN/inf.*row 4321"):
        prepare_splits(str(tmp_path / "deep.csv"), str(tmp_path / "s"), SplitSettings())
    frame = _sorted_frame(n=5000)
    frame.loc[4000, "label"] = 2
    frame.to_parquet(tmp_path / "deep.parquet", index=False)
    with pytest.raises(ValueError, match=r"deep.parquet: label column 'label'.*\[2\]"):
        prepare_splits(str(tmp_path / "deep.parquet"), str(tmp_path / "s"), SplitSettings())
    assert not (tmp_path / "s").exists()


_MEASURE = """
import json, sys, tracemalloc
import pyarrow as pa
import ede.data.batches, ede.data.shard_scaler, ede.data.split_rules, ede.data.split_writer
from ede.data.ingest import SplitSettings, prepare_splits
# Small working sets, so that a table of a few tens of MB shows what holds memory.
ede.data.batches.BATCH_BYTES = ede.data.batches.STREAM_BYTES = 1 << 20
ede.data.split_writer.BUCKET_BYTES = 4 << 20
ede.data.split_rules.GROUP_BYTES = 1 << 20
ede.data.shard_scaler.QUANTILE_SAMPLE = 10_000
tracemalloc.start()
p = prepare_splits(sys.argv[1], sys.argv[2], SplitSettings())
pools = pa.default_memory_pool().max_memory() + pa.system_memory_pool().max_memory()
print(json.dumps({"python": tracemalloc.get_traced_memory()[1], "arrow": pools, "rows": p.rows}))
"""


def test_ingest_of_many_files_keeps_bounded_memory(tmp_path):
    """A 77 MB table (float32 features) in 24 files: the arrays ingest allocates (numpy,
    through tracemalloc) and Arrow's buffers (its pools' peaks) stay under a third of it."""
    rows, d, files = 1_200_000, 16, 24
    rng = np.random.default_rng(0)
    (tmp_path / "many").mkdir()
    for k in range(files):
        n = rows // files
        cols = {f"f{j}": rng.standard_normal(n, dtype=np.float32) for j in range(d)}
        cols["label"] = (rng.random(n) < 0.01).astype(np.int64)
        path = tmp_path / "many" / f"part-{k:02d}.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=n // 4)  # Arrow reads a group
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "many"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = json.loads(done.stdout.splitlines()[-1])
    assert sum(peak["rows"].values()) == rows
    table_bytes = rows * d * 4
    # What is left: the label column and the split (about 8 bytes a row, 9 MB here), one
    # batch, one spill bucket, one row group and Arrow's buffers for them; pandas held
    # about three times the table.
    assert peak["python"] + peak["arrow"] < table_bytes / 3, (peak, table_bytes)
