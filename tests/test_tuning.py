"""Ray Tune search on a real local Ray: trials inside their Tune trials, the defaults
among them, the results table on S3, the winner refitted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("ray")

import s3fs  # noqa: E402

from ede.core.estimator import ESAD  # noqa: E402
from ede.distributed import cluster, tuning  # noqa: E402
from ede.distributed.tuning_results import auroc_standard_error, mark_best  # noqa: E402


def test_search_runs_the_defaults_saves_its_table_and_returns_its_best_row(
    ray_cluster, s3_bucket, write_anomaly_table
):
    url = write_anomaly_table(f"{s3_bucket}/data/t.parquet", shift=0.6)  # AUROCs that differ
    storage = cluster.storage_path(f"{s3_bucket}/tune")
    spec = tuning.SearchSpec(
        trials=4, epochs=3, searcher="asha", grace_period=1, max_concurrent=2, seed=1
    )
    out = tuning.search(
        ESAD(seed=0, batch_size=128),
        url,
        storage,
        spec,
        cluster.Scaling(workers=1, cpus_per_worker=0.5),
        experiment="search",
    )
    saved = pd.read_parquet(f"{out.table_url}.parquet")
    assert len(saved) == 4 and set(saved["status"]) <= {"completed", "stopped"}
    assert len(pd.read_csv(f"{out.table_url}.csv")) == 4
    defaults = saved[saved["defaults"]]
    assert len(defaults) == 1
    assert (
        defaults[["lambda_entropy", "lambda_consistency", "eta"]].values == [0.1, 0.1, 1.0]
    ).all()
    done = saved[saved["status"] == "completed"]
    assert out.best_val_auroc <= done["final_val_auroc"].max()
    assert bool(saved.loc[saved["trial_id"] == out.best_trial, "best"].iloc[0])
    if out.best_params != {"lambda_entropy": 0.1, "lambda_consistency": 0.1, "eta": 1.0}:
        assert out.best_val_auroc > out.defaults_val_auroc  # a trial must beat the defaults
    else:
        assert out.best_val_auroc == out.defaults_val_auroc
    for _, row in saved.iterrows():
        history = json.loads(row["val_auroc_by_report"])
        assert history[-1] == row["final_val_auroc"] and len(history) == row["epochs_done"]
    assert (done["epochs_done"] == spec.epochs).all()
    # The winner refitted on every row, its checkpoint on S3.
    assert out.refit is not None and out.refit.history_[-1]["epoch"] == spec.epochs - 1
    assert s3fs.S3FileSystem().exists(f"{out.checkpoint}/state.pt")


def test_the_defaults_win_unless_clearly_beaten():
    table = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "defaults": [False, True, False, False],
            "status": ["completed", "completed", "stopped", "completed"],
            "final_val_auroc": [0.95, 0.95, 0.99, 0.90],
        }
    )
    se = auroc_standard_error(0.95, 10, 300)
    assert 0.01 < se < 0.05  # ten validation anomalies: a wide error
    assert mark_best(table.copy(), 10, 300)["best"].tolist() == [False, True, False, False]
    table.loc[0, "final_val_auroc"] = 0.95 + se / 2  # ahead, within the error: noise
    assert mark_best(table.copy(), 10, 300)["best"].tolist() == [False, True, False, False]
    table.loc[0, "final_val_auroc"] = 0.95 + 2 * se
    assert mark_best(table.copy(), 10, 300)["best"].tolist() == [True, False, False, False]
    assert auroc_standard_error(1.0, 10, 300) == 0.0


def test_ede_tune_is_quiet_unless_verbose(ray_cluster, tmp_path, write_anomaly_table):
    """Without --verbose the console holds ede's summary, not Tune's per-trial tables nor
    the trials' own log lines (Tune prints one table per trial and report)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import ray

    url = write_anomaly_table(str(tmp_path / "t.parquet"), n_normal=500, n_anomaly=30)
    ede = Path(sys.executable).with_name("ede")
    cmd = [str(ede), "tune", "--data", url, "--storage", str(tmp_path / "st"), "--trials", "2"]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    out = subprocess.run(
        [*cmd, "--epochs", "2", "--no-refit"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "best trial" in text and "2 trials in" in text
    assert "Trial status" not in text and "pid=" not in text, text
    assert len(text.splitlines()) < 25, text


def dying_trial(params: dict, **kw):
    """`run_trial`, except that the first trial off the defaults kills its own process
    as it starts (as an OOM kill would); a marker file makes it happen once."""
    import os
    from pathlib import Path

    from ede.distributed.trials import run_trial

    marker = Path(kw["storage"], "died")  # a local folder here
    if params["lambda_entropy"] != 0.1:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            os._exit(1)
    run_trial(params, **kw)


def test_a_crashed_trial_is_recorded_with_its_error_while_the_others_finish(
    ray_cluster, tmp_path, write_anomaly_table, monkeypatch
):
    """Fault: one Tune trial's process dies ("The actor died unexpectedly..."). The search
    still ends, the results table has that trial with status "error" and its error's
    first line, the others completed, and the winner is one of them."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "tune" / "died"
    monkeypatch.setattr(tuning, "run_trial", dying_trial)
    url = write_anomaly_table(str(tmp_path / "t.parquet"), n_normal=500, n_anomaly=30)
    spec = tuning.SearchSpec(trials=3, epochs=2, max_concurrent=1, refit=False, verbose=0)
    out = tuning.search(
        ESAD(seed=0, batch_size=64),
        url,
        str(tmp_path / "tune"),
        spec,
        cluster.Scaling(workers=1, cpus_per_worker=1),
        experiment="crash",
    )
    assert marker.exists()
    table = pd.read_parquet(f"{out.table_url}.parquet")
    assert len(table) == 3, table
    crashed = table[table["status"] == "error"]
    assert len(crashed) == 1 and crashed["error"].iloc[0], table
    assert not crashed["defaults"].iloc[0] and not crashed["best"].iloc[0]
    assert (table.loc[table["status"] != "error", "status"] == "completed").all(), table
    assert out.best_trial in set(table.loc[table["status"] == "completed", "trial_id"])
