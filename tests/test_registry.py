"""The promotion rule and the champion pointer."""

from __future__ import annotations

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
