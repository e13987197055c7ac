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
Torch- and Ray-free, so the scoring job never pays for loading either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ede.export import registry
from ede.pipeline.layout import models_url
from ede.storage import shown_url

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
