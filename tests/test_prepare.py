"""Ingest: validation, content fingerprints, stratified splits, given splits, reuse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ede.data.ingest import SplitSettings, load_prepared, prepare_splits


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
