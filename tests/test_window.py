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


def test_labels_that_arrive_later_are_joined_by_id(tmp_path):
    """A labels table of (id, label) beside the data: its labels replace the rows' own
    where an id matches; the id column is no feature; the joined labels are what the
    split and the fingerprint see."""
    import numpy as np
    import pandas as pd

    from ede.data.ingest import SplitSettings, prepare_splits
    from ede.data.late_labels import LabelJoin

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, 3)), columns=["a", "b", "c"])
    frame.insert(0, "event_id", [f"e{i}" for i in range(400)])
    frame["label"] = 0
    frame.loc[:4, "label"] = 1  # five labelled at write time
    data = tmp_path / "data.parquet"
    frame.to_parquet(data, index=False)
    late = pd.DataFrame({"event_id": [f"e{i}" for i in range(3, 23)], "label": 1})
    late.loc[0, "label"] = 0  # e3: a false alarm, confirmed later
    labels = tmp_path / "labels.parquet"
    late.to_parquet(labels, index=False)

    settings = SplitSettings(min_rows=50)
    with pytest.raises(ValueError, match="feature column 'event_id' is not numeric"):
        prepare_splits(str(data), str(tmp_path / "s0"), settings)  # an id is no feature
    none_yet = tmp_path / "none-yet.parquet"
    pd.DataFrame({"event_id": ["x1"], "label": [1]}).to_parquet(none_yet, index=False)
    before = prepare_splits(
        str(data), str(tmp_path / "s1"), settings, join=LabelJoin(str(none_yet), "event_id")
    )
    join = LabelJoin(str(labels), "event_id")
    joined = prepare_splits(str(data), str(tmp_path / "s2"), settings, join=join)
    assert joined.feature_names == ["a", "b", "c"]  # the id is read for the join only
    assert sum(before.labelled.values()) == 5  # no id matched: the rows' own labels
    assert sum(joined.labelled.values()) == 3 + 19  # e0-e2 kept, e3 cleared, e4-e22 late
    assert joined.data_sha256 != before.data_sha256  # new labels: new prepared splits
    assert joined.late_labels == {"url": str(labels), "id_column": "event_id", "rows": 20}

    late.loc[1, "event_id"] = "e3"
    late.to_parquet(labels, index=False)
    with pytest.raises(ValueError, match="labels.parquet: id 'e3' appears more than once"):
        prepare_splits(str(data), str(tmp_path / "s3"), settings, join=join)
    orders = late.drop_duplicates("event_id").rename(columns={"event_id": "order_id"})
    orders.to_parquet(labels, index=False)
    with pytest.raises(ValueError, match="data.parquet: no id column 'order_id'"):
        prepare_splits(
            str(data), str(tmp_path / "s4"), settings, join=LabelJoin(str(labels), "order_id")
        )
