"""The scoring job's two decisions besides scoring itself: which model, and what it returns.

By default a scheduled job scores with whatever the champion pointer names at the
moment it starts, so a promotion takes effect at the next run without redeploying;
an explicit model URL (a rollback, a comparison) wins over the pointer.
Torch- and Ray-free, so the scoring job never pays for loading either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ede.export import registry
from ede.pipeline.layout import models_url

if TYPE_CHECKING:
    from ede.scoring.batch import Summary


def resolve_model(storage_url: str, name: str, model_url: str | None = None) -> str:
    """`model_url`, else the champion of `name` (FileNotFoundError when there is none)."""
    return model_url or registry.champion_url(models_url(storage_url), name)


def score_result(model_url: str, summary: Summary, output_url: str) -> dict[str, Any]:
    return {
        "model_url": model_url,
        "files": summary.files,
        "skipped": summary.skipped,
        "rows": summary.rows,
        "anomalies": summary.anomalies,
        "rows_per_second": summary.rows_per_second,
        "output_url": output_url,
    }
