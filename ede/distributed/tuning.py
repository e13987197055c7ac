"""Ray Tune: search ESAD's loss weights at the estimator's own training budget.

Every trial trains what `ESAD.fit` trains (its epochs, clipped to the validated
step floor and cap; `epochs=` fixes an exact count for quick runs), so the winner
is the model the benchmarks measure. The defaults are always the first trial and
win unless a trial beats them (`ede.distributed.tuning_results`). Trials run in
their own actors (`ede.distributed.trials`); Ray is started or joined once by the
caller. Trials report about `reports` times each (every k epochs and after the
last), each report with its validation metrics and a checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from ede.core.estimator import ESAD, with_epochs
from ede.core.training import planned_epochs
from ede.data.tables import write_table
from ede.distributed.cluster import Scaling
from ede.distributed.trainer import (
    PreparedData,
    RunSpec,
    every_row,
    fit_distributed,
    prepare_data,
)
from ede.distributed.trials import placement, run_trial
from ede.distributed.tuning_results import (
    METRIC,
    SearchSummary,
    best_row,
    is_defaults,
    results_table,
)
from ede.storage import write_bytes_atomic

# random: every trial trains its whole budget (cheap trials: no early stopping to
# second-guess a noisy validation split); asha: random sampling, weak trials stopped
# at ASHA's rungs; optuna: TPE sampling with ASHA.
SEARCHERS = ("random", "asha", "optuna")


@dataclass(frozen=True)
class SearchSpec:
    trials: int = 8
    epochs: int | None = None  # None: ESAD's own budget; an int: exactly that many epochs
    searcher: str = "random"
    grace_period: int | None = None  # ASHA's first rung, in reports; None: half of them
    reports: int = 20  # reports (validation + checkpoint) per trial at most
    tune_lr: bool = False
    tune_latent: bool = False
    max_concurrent: int | None = None
    refit: bool = True
    seed: int = 0
    verbose: int = 1  # Tune's console tables: 0 silent (a caller logging its own summary)

    def check(self) -> None:
        if self.searcher not in SEARCHERS:
            raise ValueError(f"searcher {self.searcher!r}: unknown; choose one of {SEARCHERS}")
        if self.trials < 1 or self.reports < 1 or (self.epochs is not None and self.epochs < 1):
            raise ValueError(
                f"trials={self.trials}, epochs={self.epochs}, reports={self.reports}: "
                "each must be >= 1"
            )
        if self.grace_period is not None and self.grace_period < 1:
            raise ValueError(f"grace_period={self.grace_period}: must be >= 1")

    def space(self) -> dict[str, Any]:
        space: dict[str, Any] = {
            "lambda_entropy": tune.loguniform(1e-3, 10.0),
            "lambda_consistency": tune.loguniform(1e-2, 10.0),
            "eta": tune.loguniform(0.1, 10.0),
        }
        if self.tune_lr:
            space["lr"] = tune.loguniform(1e-4, 1e-2)
        if self.tune_latent:
            space["latent_dim"] = tune.choice([8, 16, 32])
        return space


@dataclass
class SearchOutcome(SearchSummary):
    data: PreparedData  # the rows, split and scaler the trials trained on
    refit: ESAD | None = None


def search(
    det: ESAD,
    data_url: str,
    storage: str,
    spec: SearchSpec,
    scaling: Scaling,
    *,
    label_column: str | None = "label",
    validation_fraction: float = 0.2,
    experiment: str | None = None,
    validation_rows: np.ndarray | None = None,
    id_columns: list[str] | None = None,
) -> SearchOutcome:
    """Run the search; `storage` must be checked and `ray` connected by the caller."""
    spec.check()
    scaling.check()
    det = with_epochs(det, spec.epochs)
    det._check_params()
    experiment = experiment or f"ede-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    if not spec.verbose:  # Tune's "snapshotting triggered multiple times" warning: each
        # trial checkpoints every report and keeps one, so it would fire on every trial
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    data = prepare_data(
        data_url,
        label_column=label_column,
        validation_fraction=validation_fraction,
        seed=spec.seed,
        scaling=det.scaling,
        validation_rows=validation_rows,
        id_columns=id_columns,
    )
    if int(data.y_val.sum()) == 0:
        raise ValueError(f"{data_url}: the validation split holds no labelled anomaly to rank by")
    base = data.worker_config(det)
    n_epochs = planned_epochs(det.train_config(), base["steps_per_epoch"])
    base["report_every"] = every = math.ceil(n_epochs / spec.reports)
    reports = math.ceil(n_epochs / every)
    resources, concurrent = placement(scaling, spec.max_concurrent, spec.trials)
    space = spec.space()
    defaults = {k: getattr(det, k) for k in space}
    started = time.perf_counter()
    trainable = tune.with_parameters(
        run_trial, base=base, scaling=scaling, storage=storage, experiment=experiment
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=_scheduler(spec, reports, defaults),
            search_alg=_searcher(spec, concurrent, defaults),
            num_samples=spec.trials,
            max_concurrent_trials=None if spec.searcher != "optuna" else concurrent,
            # a trial's actor starts a process that imports torch and ede (seconds on a
            # busy core); reused, each concurrent slot pays that once, not once per trial
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage,
            verbose=spec.verbose,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    counts = (int((data.y_val == 1).sum()), int((data.y_val == 0).sum()))
    table = results_table(tuner.fit(), reports, list(space), defaults, counts)
    table_url = f"{storage.rstrip('/')}/{experiment}/results"
    write_table(table, f"{table_url}.parquet")
    write_bytes_atomic(f"{table_url}.csv", table.to_csv(index=False).encode())
    best = best_row(table)
    params = {k: best[k].item() if hasattr(best[k], "item") else best[k] for k in space}
    mine = table.loc[table["defaults"], "final_val_auroc"]
    outcome = SearchOutcome(
        best_params=params,
        best_val_auroc=float(best["final_val_auroc"]),
        best_trial=str(best["trial_id"]),
        defaults_val_auroc=float(mine.iloc[0]) if len(mine) else math.nan,
        checkpoint=str(best["checkpoint"]),
        table=table,
        table_url=table_url,
        wall_s=0.0,
        data=data,
    )
    if spec.refit:
        outcome.refit, outcome.checkpoint = _refit(
            det, params, data, storage, scaling, f"{experiment}-refit"
        )
    outcome.wall_s = time.perf_counter() - started
    return outcome


def _refit(det, params, data: PreparedData, storage, scaling, name):
    """The winner on every training row (fit + validation), scaled as its trials were."""
    winner = ESAD(**{**det.get_params(), **params})
    fitted, result = fit_distributed(winner, every_row(data), scaling, RunSpec(storage, name=name))
    return fitted, result.checkpoint.path


class _KeepDefaults(ASHAScheduler):
    """ASHA that never stops the defaults' trial: they may only lose to a trial that beats
    them after the same budget, never to a rung's snapshot."""

    def __init__(self, defaults: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.defaults = defaults

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if is_defaults(trial.config, self.defaults):
            return self.CONTINUE
        return decision


def _scheduler(spec: SearchSpec, reports: int, defaults: dict[str, Any]):
    if spec.searcher == "random":
        return None  # FIFO: every trial runs its budget
    grace = min(spec.grace_period or max(1, reports // 2), reports)
    return _KeepDefaults(
        defaults,
        time_attr="training_iteration",
        max_t=reports,
        grace_period=grace,
        reduction_factor=2,
    )


def _searcher(spec: SearchSpec, concurrent: int, defaults: dict[str, Any]):
    """The defaults are the first point every searcher evaluates. Tune wraps a model-based
    searcher in a ConcurrencyLimiter itself, but not the basic variant generator: that one
    carries the limit (and Tune ignores max_concurrent_trials beside it)."""
    if spec.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=[defaults], seed=spec.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(
        points_to_evaluate=[defaults], random_state=spec.seed, max_concurrent=concurrent
    )
