"""The scoring job's two decisions besides scoring itself: which model, and what it returns.

By default a scheduled job scores with whatever the champion pointer names at the
moment it starts, so a promotion takes effect at the next run without redeploying;
an explicit model URL (a rollback, a comparison) wins over the pointer.

Where it writes: a prefix holds one model's outputs (`ede.scoring.record` refuses to
mix them), and a scheduled job writes into one fixed prefix while the champion
changes with each promotion; so by default each model gets its own sub-prefix,
`<output>/model=<version>/`, the version being the registry folder the model URL
names (`<models>/<name>/<version>/`). Hive-style: a pyarrow dataset read of
`<output>` with hive partitioning sees a `model` column.

Whether to ask for a retrain: when the batch's scores drifted from the model's
validation scores (`ede.scoring.drift`: PSI above its threshold) and no retrain was
asked for within a cool-down (a week by default: the weekly retrain's own period, so
one drifted week asks once, not every day). The request is recorded under
`models/<name>/retrain-request.json` by compare-and-swap, so two scoring runs that see
the same drift ask once. Torch- and Ray-free, so the scoring job never pays for
loading either.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ede.conditional_write import Conflict, read_versioned, write_if
from ede.export import registry
from ede.pipeline.layout import models_url
from ede.scoring.history import history_url as drift_history_url
from ede.storage import parse_json, shown_url

RETRAIN_COOLDOWN_HOURS = 168.0
REQUEST_FILE = "retrain-request.json"

if TYPE_CHECKING:
    from ede.scoring.batch import Summary


def resolve_model(storage_url: str, name: str, model_url: str | None = None) -> str:
    """`model_url`, else the champion of `name` (FileNotFoundError when there is none)."""
    return model_url or registry.champion_url(models_url(storage_url), name)


MODEL_PARTITION = "model"


def model_version(model_url: str) -> str:
    """The last folder of the model URL: the registry's version for a published model."""
    version = model_url.rstrip("/").rsplit("/", 1)[-1]
    if not version or "=" in version or version.startswith((".", "_")):
        raise ValueError(
            f"{shown_url(model_url)}: {version!r} cannot name an output partition; "
            "score with per_model=False and an output of its own"
        )
    return version


def output_for(output_url: str, model_url: str, per_model: bool = True) -> str:
    """Where `model_url`'s outputs go: `<output>/model=<version>` (`per_model`), else
    `output_url` itself."""
    if not per_model:
        return output_url
    return f"{output_url.rstrip('/')}/{MODEL_PARTITION}={model_version(model_url)}"


def claim_retrain(
    storage_url: str,
    name: str,
    drift: dict[str, Any] | None,
    cooldown_hours: float = RETRAIN_COOLDOWN_HOURS,
    now: float | None = None,
) -> str | None:
    """The reason to ask for a retrain of `name` now, recorded as asked; None when the
    scores did not drift, a retrain was asked for within `cooldown_hours`, or another
    scoring run asked first."""
    if not drift or not drift.get("drifted"):
        return None
    now = time.time() if now is None else now
    url = f"{registry.model_root(models_url(storage_url), name)}/{REQUEST_FILE}"
    seen = read_versioned(url)
    last = parse_json(url, seen.data) if seen.data else None
    if last and now - float(last["at"]) < cooldown_hours * 3600:
        return None
    reason = f"score drift PSI {drift['value']:.3f} > {drift['threshold']:g}"
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"at": now, "time": stamp, "reason": reason, "drift": drift}
    try:
        write_if(url, json.dumps(record, indent=2).encode(), seen.token)
    except Conflict:
        return None  # another scoring run asked in the meantime
    return reason


def score_result(model_url: str, summary: Summary, output_url: str) -> dict[str, Any]:
    return {
        "model_url": model_url,
        "files": summary.files,
        "skipped": summary.skipped,
        "rows": summary.rows,
        "anomalies": summary.anomalies,
        "rows_per_second": summary.rows_per_second,
        "output_url": output_url,
        "drift": summary.drift,
        "drift_history": drift_history_url(output_url) if summary.history else None,
    }
