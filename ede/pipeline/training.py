"""Training on prepared splits: the loss-weight search and the final model folder.

Both train on `train.parquet` of the prepared splits with its validation rows held
out, and keep their Ray checkpoints under the run's folder, so a search's best trial
has already trained the winning configuration on exactly the rows, budget and seed
the final model would use: its checkpoint becomes the model as is, instead of a
second, identical training run. Without a search, one Ray Train run with the
defaults makes the model.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import clone

from ede.core.estimator import ESAD
from ede.data.ingest import PreparedSplits
from ede.distributed import cluster
from ede.distributed import trainer as dt
from ede.distributed.model_folder import (
    TrainedFolder,
    model_folder_from_checkpoint,
    train_model_folder,
)
from ede.distributed.tuning import SearchOutcome, SearchSpec, search
from ede.distributed.tuning_results import trial_checkpoint
from ede.pipeline.layout import RunLayout


def search_weights(
    prepared: PreparedSplits,
    layout: RunLayout,
    base: ESAD,
    spec: SearchSpec,
    scaling: cluster.Scaling,
) -> SearchOutcome:
    """Ray Tune over the loss weights, trials under `runs/<version>/tune*`."""
    return search(
        base,
        prepared.train_url,
        cluster.storage_path(layout.run_url),
        spec,
        scaling,
        label_column=prepared.label_column,
        experiment="tune",
        validation_rows=prepared.validation_rows,
    )


def best_params(outcome: SearchOutcome | None) -> dict[str, Any]:
    """The winning loss weights; none (ESAD's defaults) without a search."""
    return dict(outcome.best_params) if outcome is not None else {}


def final_model(
    prepared: PreparedSplits,
    layout: RunLayout,
    base: ESAD,
    scaling: cluster.Scaling,
    target_fpr: float,
    outcome: SearchOutcome | None = None,
) -> TrainedFolder:
    """The run's model folder (`runs/<version>/model`), threshold calibrated at `target_fpr`."""
    det = clone(base).set_params(**best_params(outcome))
    storage = cluster.storage_path(layout.run_url)
    common: dict[str, Any] = dict(
        label_column=prepared.label_column,
        target_fpr=target_fpr,
        record={"data": {"source": prepared.source, "sha256": prepared.data_sha256}},
    )
    if outcome is not None:
        checkpoint = trial_checkpoint(outcome.checkpoint, storage)
        return model_folder_from_checkpoint(
            det, checkpoint, outcome.data, layout.model_url, **common
        )
    data = dt.prepare_data(
        prepared.train_url,
        label_column=prepared.label_column,
        seed=det.seed,
        scaling=det.scaling,
        validation_rows=prepared.validation_rows,
    )
    run = dt.RunSpec(storage, name="train")
    return train_model_folder(det, data, layout.model_url, scaling, run, **common)
