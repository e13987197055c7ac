"""A data window: a retrain over date= partitions trains on the days inside it only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from ede.data.window import DataWindow

PATHS = [
    "b/t/date=2026-11-01/part-0.parquet",
    "b/t/date=2026-11-20/part-0.parquet",
    "b/t/date=2026-11-20/part-1.parquet",
    "b/t/date=2026-11-29/part-0.parquet",
]


def test_since_and_last_n_days_keep_the_recent_partitions():
    everything = DataWindow()
    assert everything.select(PATHS, "b/t") == (PATHS, [])
    kept, days = DataWindow(since="2026-11-20").select(PATHS, "b/t")
    assert kept == PATHS[1:] and days == ["2026-11-20", "2026-11-29"]
    kept, days = DataWindow(last_n_days=7, today="2026-11-30").select(PATHS, "b/t")
    assert kept == PATHS[3:] and days == ["2026-11-29"]
    both = DataWindow(since="2026-11-25", last_n_days=30, today="2026-11-30")
    assert both.first_day().isoformat() == "2026-11-25"  # the later bound wins


def test_a_window_refuses_what_it_cannot_place_in_time():
    with pytest.raises(ValueError, match="loose.parquet lies in no date=YYYY-MM-DD/ partition"):
        DataWindow(last_n_days=3).select([*PATHS, "b/t/loose.parquet"], "b/t")
    with pytest.raises(ValueError, match="no date= partition on or after 2026-12-01"):
        DataWindow(since="2026-12-01").select(PATHS, "b/t")
    with pytest.raises(ValueError, match="since='yesterday': expected a date"):
        DataWindow(since="yesterday")
    with pytest.raises(ValueError, match="last_n_days=0"):
        DataWindow(last_n_days=0)


@pytest.mark.usefixtures("prefect_harness", "ray_cluster")
def test_a_retrain_with_last_n_days_trains_on_the_days_inside_it(tmp_path, write_anomaly_table):
    from flows.retrain import retrain

    today = datetime.now(timezone.utc).date()
    sizes = {20: (300, 20), 5: (200, 14), 1: (250, 16)}  # days ago: (normal, anomalies) rows
    for ago, (normal, anomalies) in sizes.items():
        day = (today - timedelta(days=ago)).isoformat()
        folder = tmp_path / "data" / f"date={day}"
        folder.mkdir(parents=True)
        write_anomaly_table(str(folder / "part-0.parquet"), n_normal=normal, n_anomaly=anomalies)
    storage = tmp_path / "store"
    out = retrain(
        data_url=str(tmp_path / "data"),
        storage_url=str(storage),
        last_n_days=7,
        trials=0,
        epochs=1,
        batch_size=64,
        quantize_int8=False,
    )
    report = json.loads((storage / "models" / "ede" / out["version"] / "report.json").read_text())
    recent = [(today - timedelta(days=ago)).isoformat() for ago in (5, 1)]
    assert report["data"]["partitions"] == recent
    assert report["data"]["window"]["last_n_days"] == 7
    assert sum(report["data"]["rows"].values()) == (200 + 14) + (250 + 16)  # not day -20's
    assert sum(report["data"]["labelled"].values()) == 14 + 16
