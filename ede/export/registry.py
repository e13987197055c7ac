"""A model registry on object storage: immutable versions and a champion pointer.

    <models>/<name>/<version>/   model.onnx, [model.int8.onnx], report.json, metadata.json
    <models>/<name>/champion     JSON: which version serves, and its test metrics

A version folder is complete when metadata.json is there (it is copied last, and
readers refuse a folder without it). The pointer is one small object written
atomically, so scorers see the old champion or the new one, never a mix. It moves
only when the candidate is at least as good as the champion on the same test rows,
and only from the champion the candidate was compared with: the move is a
compare-and-swap (`ede.conditional_write`), so when another run moved the pointer
meanwhile, this one is told (`Decision.moved`) and compares again with what is
there now, instead of the last run to finish winning.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ede.conditional_write import Conflict, read_versioned, write_if
from ede.export.artifact import METADATA_FILE, VARIANTS, read_model
from ede.storage import (
    parse_json,
    read_bytes,
    read_json,
    remove,
    shown_url,
    write_bytes_atomic,
    write_json,
)

CHAMPION, REPORT = "champion", "report.json"


def new_version() -> str:
    """Sortable by time, unique across concurrent runs."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def model_root(models_url: str, name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"model name {name!r}: must be non-empty, without '/' or a leading '.'")
    return f"{models_url.rstrip('/')}/{name}"


def read_champion(models_url: str, name: str) -> dict[str, Any] | None:
    return read_json(f"{model_root(models_url, name)}/{CHAMPION}", missing_ok=True)


@dataclass(frozen=True)
class ChampionView:
    """The pointer as one run read it: the record, and the token its move must still find."""

    record: dict[str, Any] | None
    token: str | None


def champion_view(models_url: str, name: str) -> ChampionView:
    url = f"{model_root(models_url, name)}/{CHAMPION}"
    seen = read_versioned(url)
    if seen.data is None:
        return ChampionView(None, None)
    return ChampionView(parse_json(url, seen.data), seen.token)


def champion_url(models_url: str, name: str) -> str:
    champ = read_champion(models_url, name)
    if champ is None:
        raise FileNotFoundError(
            f"{shown_url(model_root(models_url, name))}/{CHAMPION}: no champion yet; "
            "run the retraining flow first, or pass a model URL"
        )
    return champ["url"]


def publish(artifact_url: str, models_url: str, name: str, version: str, report: dict) -> str:
    """Copy an exported artifact (sha256-checked) into its version folder; returns its URL."""
    read_model(artifact_url)  # refuses an incomplete or tampered export before copying
    src, dst = artifact_url.rstrip("/"), f"{model_root(models_url, name)}/{version}"
    try:
        for file in VARIANTS.values():
            try:
                data = read_bytes(f"{src}/{file}")
            except FileNotFoundError:
                continue  # a quantised graph exists only for an export that asked for it
            write_bytes_atomic(f"{dst}/{file}", data)
        write_json(f"{dst}/{REPORT}", report)
        write_bytes_atomic(f"{dst}/{METADATA_FILE}", read_bytes(f"{src}/{METADATA_FILE}"))
        read_model(dst)
    except BaseException:
        remove(dst, recursive=True)
        raise
    return dst


def set_champion(models_url: str, name: str, record: dict[str, Any], seen: ChampionView) -> None:
    """Move the pointer, only if it is still what `seen` read (else
    `ede.conditional_write.Conflict`): a move is always decided on some view of it."""
    url = f"{model_root(models_url, name)}/{CHAMPION}"
    write_if(url, json.dumps(record, indent=2).encode(), seen.token)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    moved: bool = False  # the pointer moved during the run: compare again with what is there


def schema_change(candidate: list[str], champion: list[str]) -> str | None:
    """How the champion's input features differ from the candidate's, or None. Columns are
    read by name, so an order change alone changes nothing; a feature missing or added
    does: the two models no longer describe the same rows."""
    missing = [f for f in champion if f not in set(candidate)]
    added = [f for f in candidate if f not in set(champion)]
    if not missing and not added:
        return None
    parts = [f"missing {missing}" if missing else "", f"added {added}" if added else ""]
    return "features " + ", ".join(p for p in parts if p) + " against the champion's"


def decide(
    candidate: dict,
    champion: dict | None,
    champion_error: str | None = None,
    schema: str | None = None,
    allow_schema_change: bool = False,
) -> Decision:
    """The rule: promote when there is no comparable champion or the candidate's test AUROC
    is at least the champion's on the same rows. Never on a metric that is missing or NaN
    (the first model of a name included), and never across a schema change (`schema`, from
    `schema_change`) unless `allow_schema_change`: a model that needs other columns would
    break every scorer of the old ones."""
    new = candidate.get("auroc")
    if new is None or not math.isfinite(new):
        return Decision(False, "the candidate's test AUROC is undefined (no labelled anomalies)")
    if schema is not None and not allow_schema_change:
        return Decision(
            False, f"{schema}; not promoted across a schema change without allow_schema_change"
        )
    if champion is None and champion_error is None:
        return Decision(True, "no champion yet")
    if champion_error is not None:
        return Decision(True, f"the champion cannot score this test data ({champion_error})")
    old = champion.get("auroc")
    if old is None or not math.isfinite(old):
        return Decision(True, "the champion has no test AUROC on this data")
    if new >= old:
        return Decision(True, f"test AUROC {new:.4f} >= champion's {old:.4f} on the same rows")
    return Decision(False, f"test AUROC {new:.4f} < champion's {old:.4f} on the same rows")


def promote(
    artifact_url: str,
    models_url: str,
    name: str,
    version: str,
    report: dict[str, Any],
    seen: ChampionView,
    allow_schema_change: bool = False,
) -> tuple[Decision, str]:
    """Decide on `report["metrics"]` (`candidate`, `champion`, `champion_error`, and
    `schema_change` when the features changed), publish the version either way (a kept
    candidate stays inspectable, with the decision in its report.json), then move the
    champion pointer only on a promotion. The pointer moves last, so a failure before it
    leaves the old champion serving. `seen`: the pointer the metrics' champion was read
    from; the move happens only if it is still that one, else the decision says `moved`
    and the caller compares again. Returns the decision and the published version's URL."""
    metrics = report["metrics"]
    decision = decide(
        metrics["candidate"],
        metrics["champion"],
        metrics["champion_error"],
        metrics.get("schema_change"),
        allow_schema_change,
    )
    url = publish(artifact_url, models_url, name, version, _decided(report, decision))
    if decision.promote:
        record = {
            "name": name,
            "version": version,
            "url": url,
            "test": metrics["candidate"],
            "data_sha256": report["data"]["sha256"],
            "test_url": report["data"]["test_url"],
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            set_champion(models_url, name, record, seen)
        except Conflict:
            now = read_champion(models_url, name)
            if (now or {}).get("version") == version:  # a retried move that had landed
                return decision, url
            decision = Decision(
                False,
                f"the champion moved to {(now or {}).get('version', 'none')} during this run; "
                "not compared with it yet",
                moved=True,
            )
            write_json(f"{url}/{REPORT}", _decided(report, decision))
    return decision, url


def _decided(report: dict[str, Any], decision: Decision) -> dict[str, Any]:
    return {**report, "decision": {"promote": decision.promote, "reason": decision.reason}}
