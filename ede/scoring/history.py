"""The drift of the last runs into an output prefix: `<output>/_ede-drift.json`.

One scoring run's drift (`ede.scoring.drift`) says how far this batch is from the
model's validation scores; a scheduled user also wants to see where it is heading, so
every run that scored rows with a model that records reference scores (every export
since they were recorded) appends its drift here, and the score flow draws the trend
from it. It lives with the outputs it describes (underscored, so Parquet readers skip
it, like `_ede-scored.json`), and a prefix holds one model's outputs
(`ede.scoring.record`), so a history is one model's against one reference: with the
score flow's per-model sub-prefixes, a promotion starts a new history, whose first
point is the new champion against its own validation scores.

    {"format": "ede.drift/1",
     "runs": [{"id", "at", "time", "model": {...}, "input", "value", "threshold", "drifted",
               "rows", "above_threshold", "quantiles", "bin_shares", "files": {...}}]}

A run's entry reaches the history through its scoring record (`ede.scoring.record`,
`pending_drift`), so a failure after its last output is committed does not lose it.
Bounded: the last `KEEP` runs, oldest first. Concurrent runs append by
compare-and-swap (`ede.conditional_write.update`), so none loses another's entry;
the object is replaced whole, so a reader sees the old history or the new one.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ede.conditional_write import read_versioned, update
from ede.storage import join, parse_json, shown_url

HISTORY_FILE = "_ede-drift.json"
FORMAT = "ede.drift/1"
KEEP = 30  # runs kept; the trend shows these


def history_url(output_url: str) -> str:
    return join(output_url, HISTORY_FILE)


def entry(drift: dict[str, Any], model: dict[str, Any], input_url: str) -> dict[str, Any]:
    """One run's line in the history: its id, when, which model, which input, its drift."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    run = {"id": uuid.uuid4().hex, "at": now, "time": stamp, "model": model}
    return {**run, "input": shown_url(input_url), **drift}


def append(output_url: str, *runs: dict[str, Any]) -> list[dict[str, Any]]:
    """Add `runs` (`entry`s) to the prefix's history, each once (by its id: a run's entry
    may be moved here by another run too); the last `KEEP` runs, with them."""
    url = history_url(output_url)
    kept: list[dict[str, Any]] = []

    def change(data: bytes | None) -> bytes | None:
        have = _parse(url, data)
        ids = {r.get("id") for r in have}
        new = [r for r in runs if r.get("id") is None or r["id"] not in ids]
        kept[:] = (have + new)[-KEEP:]
        if not new:
            return None
        return json.dumps({"format": FORMAT, "runs": kept}, indent=1).encode()

    update(url, change)
    return kept


def read(output_url: str) -> list[dict[str, Any]]:
    """The prefix's runs, oldest first ([] before the first)."""
    url = history_url(output_url)
    return _parse(url, read_versioned(url).data)


def _parse(url: str, data: bytes | None) -> list[dict[str, Any]]:
    if data is None:
        return []
    record = parse_json(url, data)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{shown_url(url)}: not an ede drift history ({FORMAT!r} expected)")
    return list(record.get("runs") or [])
