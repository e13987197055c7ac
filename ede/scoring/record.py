"""Which model scored each output: `<output>/_ede-scored.json`, the output prefix's record.

Underscored, so Parquet readers (pyarrow, Spark) skip it like the temporaries. It holds

    {"format": "ede.scored/1",
     "model": {"url", "sha256", "variant"},           # the model this prefix is scored with
     "files": {"<stem>.parquet": {"input", "rows", "model": {...}, "scored_at"}},
     "pending_drift": {"<run id>": {...}}}            # ede.scoring.history, in transit

- One model per prefix: a run whose model (sha256 of the variant's graph, and the
  variant) is not the recorded one is refused before it writes anything, unless
  `overwrite`; then the prefix's model becomes this run's.
- Always true per file: each file's entry names the model that wrote it. With
  `overwrite`, the files this run rewrites get its model; files of inputs not in the
  run stay as they are and keep their own (older) model's entry, so after a partial
  overwrite the record lists two models, each file with the one that wrote it.
- Never a stale entry: a file's entry is dropped before its output is moved into
  place and written again after, so a crash in between leaves the file unrecorded
  (unknown), never recorded under the model it no longer comes from. Outputs written
  before records existed are not listed either.
- Only a listed output counts as done: a rerun skips the outputs the record lists and
  scores the unlisted ones again (`ede.scoring.batch.plan`). A crash, or a storage
  outage, between an output's move and its entry would otherwise leave that file
  unrecorded for good, since every retry would skip it.
- A run's drift is never lost: its history entry is written with its last file's entry,
  in the same compare-and-swap, and moved to the history after (`settle_drift` in
  `ede.scoring.batch`, which every run calls). A run that dies in between, or whose
  history write fails, leaves the entry here, and the next run on the prefix (its
  retry, which finds every file done) moves it.
- Concurrent scorers: every change is a compare-and-swap (`ede.conditional_write`),
  re-read and re-applied on a conflict, so no writer loses another's entries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ede.conditional_write import read_versioned, update
from ede.export.artifact import VARIANTS
from ede.storage import absolute, parse_json, shown_url

RECORD_FILE = "_ede-scored.json"
FORMAT = "ede.scored/1"
PENDING = "pending_drift"  # run id: its history entry, until it is in the history


class MixedModels(ValueError):
    """The output prefix is scored with another model."""


def model_entry(model_url: str, meta: dict[str, Any], variant: str) -> dict[str, str]:
    """The model as the record names it: URL (no credentials; a local path made absolute),
    the sha256 of the variant's graph from metadata.json, the variant."""
    sha = meta["files"][VARIANTS[variant]]["sha256"]  # read_model checked it is there
    return {"url": shown_url(absolute(model_url)), "sha256": sha, "variant": variant}


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("sha256") == b.get("sha256") and a.get("variant") == b.get("variant")


def _named(model: dict[str, Any]) -> str:
    return f"{model.get('url')} ({model.get('variant')}, sha256 {str(model.get('sha256'))[:12]})"


def refusal(output_url: str, record: dict[str, Any] | None, model: dict[str, Any]) -> str | None:
    """The one line refusing to mix `model` into a prefix `record` says is another's."""
    recorded = (record or {}).get("model")
    if recorded is None or same_model(recorded, model):
        return None
    return (
        f"{shown_url(output_url)} is scored with {_named(recorded)}, not {_named(model)}; "
        "use another --output, or --overwrite to rescore with this model"
    )


class Record:
    """The record of one output prefix, as one scoring run updates it."""

    def __init__(self, output_url: str, record_url: str, model: dict[str, Any], overwrite: bool):
        self.output_url, self.url, self.model, self.overwrite = (
            output_url,
            record_url,
            model,
            overwrite,
        )

    def read(self) -> dict[str, Any] | None:
        return _parse(self.url, read_versioned(self.url).data)

    def check(self) -> dict[str, Any] | None:
        """MixedModels unless this run may write here (read only: plan() calls it); else
        the record as read (None when there is none yet)."""
        record = self.read()
        line = None if self.overwrite else refusal(self.output_url, record, self.model)
        if line:
            raise MixedModels(line)
        return record

    def before_commit(self, name: str) -> None:
        """Before `name` is moved into place: claim the prefix (or refuse), drop its entry."""

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            line = None if self.overwrite else refusal(self.output_url, record, self.model)
            if line:
                raise MixedModels(line)
            record = record or _empty()
            claimed = record.get("model") is not None and same_model(record["model"], self.model)
            if claimed and name not in record["files"]:
                return None  # nothing to change: no write
            record["model"] = self.model
            record["files"].pop(name, None)
            return record

        self._update(change)

    def after_commit(
        self, name: str, source: str, rows: int, drift: dict[str, Any] | None = None
    ) -> None:
        """`name` is in place: record where it came from, its rows and its model. `drift`:
        the run's history entry (`ede.scoring.history`), given with the run's last file,
        so that the run is done and its entry is due in one write (`pending_drift`)."""
        entry = {
            "input": shown_url(source),
            "rows": rows,
            "model": self.model,
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

        def change(record: dict[str, Any] | None) -> dict[str, Any]:
            record = record or {**_empty(), "model": self.model}
            record["files"][name] = entry
            if drift is not None:
                record.setdefault(PENDING, {})[drift["id"]] = drift
            return record

        self._update(change)

    def pending_drift(self) -> list[dict[str, Any]]:
        """History entries of runs that finished but whose entry is not yet in the history."""
        record = self.read() or {}
        return sorted((record.get(PENDING) or {}).values(), key=lambda e: e.get("at", 0.0))

    def drift_settled(self, ids: list[str]) -> None:
        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            pending = (record or {}).get(PENDING) or {}
            if not any(i in pending for i in ids):
                return None
            for i in ids:
                pending.pop(i, None)
            return record

        self._update(change)

    def _update(self, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> None:
        def encoded(data: bytes | None) -> bytes | None:
            new = change(_parse(self.url, data))
            return None if new is None else json.dumps(new, indent=2, sort_keys=True).encode()

        update(self.url, encoded)


def _empty() -> dict[str, Any]:
    return {"format": FORMAT, "model": None, "files": {}}


def _parse(url: str, data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    record = parse_json(url, data)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{shown_url(url)}: not an ede scoring record ({FORMAT!r} expected)")
    record.setdefault("files", {})
    return record
