"""The ODDS benchmark on the real shared data: one seed, fast methods, the report's shape."""

from ede.bench.odds import markdown, run_odds


def test_thyroid_one_seed(odds_dir):
    report = run_odds(
        odds_dir, datasets=["thyroid"], seeds=1, methods=["esad", "iforest"], log=lambda s: None
    )
    rows = {r["method"]: r for r in report["results"]}
    assert rows["esad"]["auroc"] > 0.97  # ESAD paper: n/a; DeepSAD (DeepOD) 99.2 on 5 seeds
    assert rows["iforest"]["auroc"] > 0.9
    assert "| thyroid |" in markdown(report)


def test_pipeline_script_writes_the_flows_given_splits(tmp_path):
    """benchmarks/pipeline_odds.py hands the flow the protocol's split as train/ and test/:
    ingest must keep the test rows as they are and carve validation out of train/ only."""
    import numpy as np

    from benchmarks.pipeline_odds import write_split
    from ede.data.ingest import SplitSettings, prepare_splits
    from ede.data.protocol import semi_supervised_split

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(400, 3)), rng.normal(3, 1, size=(60, 3))]).astype(np.float32)
    y = np.r_[np.zeros(400), np.ones(60)].astype(np.int64)
    split = semi_supervised_split(X, y, seed=0, gamma_l=0.05)
    data_url = write_split(split, tmp_path / "data")
    prepared = prepare_splits(data_url, str(tmp_path / "storage"), SplitSettings(seed=0))
    assert prepared.given_splits and prepared.feature_names == ["f0", "f1", "f2"]
    assert prepared.rows["test"] == len(split.y_test)
    assert prepared.labelled["test"] == split.n_test_anomaly
    assert prepared.rows["fit"] + prepared.rows["validation"] == len(split.y_train)
    assert prepared.labelled["fit"] + prepared.labelled["validation"] == split.n_labelled
