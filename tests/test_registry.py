"""The promotion rule and the champion pointer."""

from __future__ import annotations

import json
import math

import pytest

from ede.export import registry
from ede.storage import read_json


def test_rule_promotes_only_when_at_least_as_good():
    assert registry.decide({"auroc": 0.9}, None).promote
    assert registry.decide({"auroc": 0.9}, {"auroc": 0.9}).promote  # ties go to the new one
    assert registry.decide({"auroc": 0.91}, {"auroc": 0.9}).promote
    kept = registry.decide({"auroc": 0.89}, {"auroc": 0.9})
    assert not kept.promote and "0.8900 < champion's 0.9000" in kept.reason
    assert not registry.decide({"auroc": math.nan}, {"auroc": 0.9}).promote
    assert registry.decide({"auroc": 0.5}, None, champion_error="no column 'x'").promote


def test_never_on_a_nan_metric_nor_across_a_schema_change_unless_allowed():
    first = registry.decide({"auroc": math.nan}, None)  # no labels in test: no first champion
    assert not first.promote and "undefined" in first.reason
    assert not registry.decide({"auroc": None}, None, champion_error="x").promote
    change = registry.schema_change(["a", "b", "d"], ["a", "b", "c"])
    assert change == "features missing ['c'], added ['d'] against the champion's"
    assert registry.schema_change(["b", "a"], ["a", "b"]) is None  # read by name: same rows
    kept = registry.decide({"auroc": 0.99}, {"auroc": 0.5}, None, change)
    assert not kept.promote and "missing ['c']" in kept.reason
    assert "allow_schema_change" in kept.reason
    assert registry.decide({"auroc": 0.99}, None, "no column 'c'", change, True).promote


def test_champion_pointer_round_trip(tmp_path):
    models = str(tmp_path / "models")
    assert registry.read_champion(models, "m") is None
    with pytest.raises(FileNotFoundError, match="no champion yet"):
        registry.champion_url(models, "m")
    seen = registry.champion_view(models, "m")
    registry.set_champion(models, "m", {"url": "s3://b/models/m/v1", "version": "v1"}, seen)
    assert registry.champion_url(models, "m") == "s3://b/models/m/v1"
    with pytest.raises(ValueError, match="model name"):
        registry.model_root(models, "../x")


def test_versions_sort_by_time_and_are_unique():
    a, b = registry.new_version(), registry.new_version()
    assert a != b and len(a) == len(b)


def _fake_export(folder, payload: bytes) -> str:
    """The files `read_model` checks (metadata.json with the graph's sha256), not a real graph."""
    from ede.export.artifact import FORMAT, METADATA_FILE, MODEL_FILE, sha256

    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(payload)
    meta = {"format": FORMAT, "files": {MODEL_FILE: {"sha256": sha256(payload)}}}
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    return str(folder)


def _report(auroc: float, champion: dict | None) -> dict:
    return {
        "data": {"sha256": "abc", "test_url": "s3://b/prepared/k/test.parquet"},
        "metrics": {"candidate": {"auroc": auroc}, "champion": champion, "champion_error": None},
    }


def test_promote_publishes_either_way_and_moves_the_pointer_only_on_merit(tmp_path):
    models = str(tmp_path / "models")
    first = _fake_export(tmp_path / "run1", b"graph-1")
    view = registry.champion_view(models, "m")
    decision, url = registry.promote(first, models, "m", "v1", _report(0.9, None), view)
    assert decision.promote and url == f"{models}/m/v1"
    champion = registry.read_champion(models, "m")
    assert champion["version"] == "v1" and champion["url"] == url
    assert champion["test"] == {"auroc": 0.9} and champion["data_sha256"] == "abc"

    second = _fake_export(tmp_path / "run2", b"graph-2")
    view = registry.champion_view(models, "m")
    decision, url = registry.promote(second, models, "m", "v2", _report(0.8, {"auroc": 0.9}), view)
    assert not decision.promote and "0.8000 < champion's 0.9000" in decision.reason
    assert (tmp_path / "models" / "m" / "v2" / "model.onnx").read_bytes() == b"graph-2"
    stored = json.loads((tmp_path / "models" / "m" / "v2" / "report.json").read_text())
    assert stored["decision"] == {"promote": False, "reason": decision.reason}
    assert registry.read_champion(models, "m")["version"] == "v1"  # kept


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_run_that_read_a_stale_champion_never_moves_the_pointer(store, tmp_path, request):
    """Two retrains start before either promotes: both read "no champion yet". The one that
    finishes first promotes; the other, the worse one finishing last, must not overwrite it
    on that stale view: it is told the pointer moved, keeps its version published and says
    why, and its caller compares again (the retraining flow does)."""
    root = str(tmp_path) if store == "local" else request.getfixturevalue("s3_bucket")
    models = f"{root}/models"
    before = registry.champion_view(models, "m")  # what both runs read at their start
    better = _fake_export(tmp_path / "better", b"graph-better")
    worse = _fake_export(tmp_path / "worse", b"graph-worse")

    decision, _ = registry.promote(better, models, "m", "v-better", _report(0.957, None), before)
    assert decision.promote
    decision, url = registry.promote(worse, models, "m", "v-worse", _report(0.733, None), before)
    assert not decision.promote and decision.moved
    assert "moved to v-better" in decision.reason
    assert registry.read_champion(models, "m")["version"] == "v-better"
    stored = read_json(f"{url}/report.json")
    assert stored["decision"] == {"promote": False, "reason": decision.reason}

    # compared again with what is there now, the rule decides on merit
    now = registry.champion_view(models, "m")
    again = _report(0.733, now.record["test"])
    decision, _ = registry.promote(worse, models, "m", "v-worse", again, now)
    assert not decision.promote and not decision.moved and "< champion's" in decision.reason
