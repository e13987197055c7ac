"""Ray Tune search on a real local Ray: 4 ASHA trials, results table on S3, refit winner."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("ray")

import s3fs  # noqa: E402

from ede.core.estimator import ESAD  # noqa: E402
from ede.distributed import (
    cluster,  # noqa: E402
    tuning,  # noqa: E402
)


def test_four_trial_asha_search_saves_table_and_returns_its_best_row(
    ray_cluster, s3_bucket, write_anomaly_table
):
    url = write_anomaly_table(f"{s3_bucket}/data/t.parquet", shift=0.6)  # AUROCs that differ
    storage = cluster.storage_path(f"{s3_bucket}/tune")
    spec = tuning.SearchSpec(trials=4, epochs=3, grace_period=1, max_concurrent=2, seed=1)
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
    done = saved[saved["status"] == "completed"]
    best = done.loc[done["final_val_auroc"].idxmax()]
    assert out.best_trial == best["trial_id"] and bool(best["best"])
    assert out.best_params == {k: best[k] for k in ("lambda_entropy", "lambda_consistency", "eta")}
    assert out.best_val_auroc == best["final_val_auroc"]
    for _, row in saved.iterrows():
        history = json.loads(row["val_auroc_by_epoch"])
        assert len(history) == row["epochs_done"] and history[-1] == row["final_val_auroc"]
    assert (done["epochs_done"] == spec.epochs).all()
    # The winner refitted on every row, its checkpoint on S3.
    assert out.refit is not None and out.refit.history_[-1]["epoch"] == spec.epochs - 1
    assert s3fs.S3FileSystem().exists(f"{out.checkpoint}/state.pt")
