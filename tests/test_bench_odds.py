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
