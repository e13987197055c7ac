"""The promotion rule and the champion pointer."""

from __future__ import annotations

import json
import math

import pytest

from ede.export import registry


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
    registry.set_champion(models, "m", {"url": "s3://b/models/m/v1", "version": "v1"})
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
    decision, url = registry.promote(first, models, "m", "v1", _report(0.9, None))
    assert decision.promote and url == f"{models}/m/v1"
    champion = registry.read_champion(models, "m")
    assert champion["version"] == "v1" and champion["url"] == url
    assert champion["test"] == {"auroc": 0.9} and champion["data_sha256"] == "abc"

    second = _fake_export(tmp_path / "run2", b"graph-2")
    decision, url = registry.promote(second, models, "m", "v2", _report(0.8, {"auroc": 0.9}))
    assert not decision.promote and "0.8000 < champion's 0.9000" in decision.reason
    assert (tmp_path / "models" / "m" / "v2" / "model.onnx").read_bytes() == b"graph-2"
    stored = json.loads((tmp_path / "models" / "m" / "v2" / "report.json").read_text())
    assert stored["decision"] == {"promote": False, "reason": decision.reason}
    assert registry.read_champion(models, "m")["version"] == "v1"  # kept
