"""Training on prepared splits: the loss-weight search and the final model folder.

Both train on `train.parquet` of the prepared splits with its validation rows held
out, and keep their Ray checkpoints under the run's folder. The search's best trial
(or, without a search, one Ray Train run with the defaults) is the chosen
configuration's model on the fit rows; the model that ships is, by default, that
configuration refitted on every training row (`final_model`).
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
    check_calibration_rows,
    model_folder_from_checkpoint,
    refit_model_folder,
    train_model_folder,
)
from ede.distributed.tuning import SearchOutcome, SearchSpec, search
from ede.distributed.tuning_results import SearchSummary, best_params, trial_checkpoint
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


def final_model(
    prepared: PreparedSplits,
    layout: RunLayout,
    base: ESAD,
    scaling: cluster.Scaling,
    target_fpr: float,
    outcome: SearchSummary | None = None,
    refit: bool = True,
    *,
    in_this_task: bool = False,
) -> TrainedFolder:
    """The run's model folder (`runs/<version>/model`), threshold calibrated at `target_fpr`.

    The chosen configuration's model on the fit rows is the search's best trial (or, with
    no search, one Ray training). With `refit`, the model that ships is that
    configuration fitted again on every training row, fit and validation rows, as the
    benchmarked `ESAD().fit` is: the validation rows are a fifth of the training data, and
    holding them out of the shipped model cost up to 0.9 AUROC points on the ODDS sets
    (benchmarks/pipeline_odds.py). Its threshold is carried from the model that held them
    out (`ede.export.calibration.transfer_threshold`). `in_this_task`: the caller is a Ray
    task holding one worker's resources, where a one-worker training runs
    (`ede.pipeline.steps.train`).
    """
    det = clone(base).set_params(**best_params(outcome))
    storage = cluster.storage_path(layout.run_url)
    record = {"data": {"source": prepared.source, "sha256": prepared.data_sha256}}
    common: dict[str, Any] = dict(
        label_column=prepared.label_column, target_fpr=target_fpr, record=record
    )
    data = dt.prepare_data(  # the rows, split and scaler the search's trials trained on
        prepared.train_url,
        label_column=prepared.label_column,
        seed=det.seed,
        scaling=det.scaling,
        validation_rows=prepared.validation_rows,
    )
    check_calibration_rows(data, target_fpr)  # before the first of up to two trainings
    run = dt.RunSpec(storage, name="train", in_this_task=in_this_task)
    if outcome is not None:
        checkpoint = trial_checkpoint(outcome.checkpoint, storage)
        if not refit:
            return model_folder_from_checkpoint(det, checkpoint, data, layout.model_url, **common)
        selected = dt.estimator_from_checkpoint(det, checkpoint, data)
    elif not refit:
        return train_model_folder(det, data, layout.model_url, scaling, run, **common)
    else:
        selected, _ = dt.fit_distributed(det, data, scaling, run)
    refit_run = dt.RunSpec(storage, name="refit", in_this_task=in_this_task)
    return refit_model_folder(selected, data, layout.model_url, scaling, refit_run, **common)
