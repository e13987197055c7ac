"""Ray Tune: search ESAD's loss weights, each trial one Ray Train run.

Ray 2.60 (Train V2) does not take a TorchTrainer as a Tune trainable; the documented
pattern is a small trial driver that builds a TorchTrainer with
`TuneReportCallback` and calls `fit()`. Trial drivers hold a custom
`trial_driver` resource instead of a CPU where the cluster offers it.

Validation splits hold a handful of labelled anomalies, so picking the best of many
epochs or configs on them overfits (a prototype's config that led validation by 7
points trailed on test). Hence: every trial runs the same
fixed epoch budget; ASHA only stops clearly weak trials at its rungs; a trial is
judged by its validation AUROC at the final epoch (never by the weighted loss,
which is not comparable across weights, nor by its best epoch); only trials that
ran the whole budget can win; and the winner is refitted on every training row.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from sklearn.base import clone

from ede.core.estimator import ESAD
from ede.data.tables import write_table
from ede.distributed.cluster import Scaling
from ede.distributed.trainer import (
    PreparedData,
    RunSpec,
    fit_distributed,
    make_trainer,
    prepare_data,
)
from ede.storage import write_bytes_atomic

SEARCHERS = ("asha", "optuna")  # asha: random sampling + ASHA; optuna: TPE + ASHA
METRIC = "val_auroc"
TRAIN_KEYS = ("lambda_entropy", "lambda_consistency", "eta", "lr")


@dataclass(frozen=True)
class SearchSpec:
    trials: int = 8
    epochs: int = 20  # the fixed budget every trial is judged at
    searcher: str = "asha"
    grace_period: int | None = None  # ASHA's first rung; None: half the budget
    tune_lr: bool = False
    tune_latent: bool = False
    max_concurrent: int | None = None
    refit: bool = True
    seed: int = 0
    verbose: int = 1  # Tune's console tables: 0 silent (a caller logging its own summary)

    def check(self) -> None:
        if self.searcher not in SEARCHERS:
            raise ValueError(f"searcher {self.searcher!r}: unknown; choose one of {SEARCHERS}")
        if self.trials < 1 or self.epochs < 1:
            raise ValueError(f"trials={self.trials}, epochs={self.epochs}: both must be >= 1")
        if self.grace_period is not None and not 1 <= self.grace_period <= self.epochs:
            raise ValueError(f"grace_period={self.grace_period}: must be in [1, {self.epochs}]")

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
class SearchOutcome:
    best_params: dict[str, Any]
    best_val_auroc: float
    best_trial: str
    checkpoint: str  # the refitted model's checkpoint, else the best trial's
    table: pd.DataFrame
    table_url: str
    wall_s: float
    data: PreparedData  # the rows, split and scaler the trials trained on
    refit: ESAD | None = None


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    config = copy.copy(base)
    config["train"] = {**base["train"], **{k: params[k] for k in TRAIN_KEYS if k in params}}
    if "latent_dim" in params:
        config["net"] = {**base["net"], "latent_dim": int(params["latent_dim"])}
    return config


def run_trial(params: dict, *, base: dict, scaling: Scaling, storage: str, experiment: str):
    """Tune's trainable: one Ray Train run, its reports forwarded to Tune per epoch."""
    trial_id = tune.get_context().get_trial_id()
    run = RunSpec(storage, name=f"{experiment}-{trial_id}", keep_checkpoints=1)
    trainer = make_trainer(
        apply_params(base, params), scaling, run, callbacks=[TuneReportCallback()]
    )
    trainer.fit()


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
) -> SearchOutcome:
    """Run the search; `storage` must be checked and `ray` connected by the caller."""
    spec.check()
    scaling.check()
    det = clone(det).set_params(epochs=spec.epochs, min_steps=None, max_steps=None)
    det._check_params()
    experiment = experiment or f"ede-tune-{time.strftime('%Y%m%d-%H%M%S')}"
    data = prepare_data(
        data_url,
        label_column=label_column,
        validation_fraction=validation_fraction,
        seed=spec.seed,
        scaling=det.scaling,
        validation_rows=validation_rows,
    )
    if int(data.y_val.sum()) == 0:
        raise ValueError(f"{data_url}: the validation split holds no labelled anomaly to rank by")
    driver, concurrent = _placement(scaling, spec)
    started = time.perf_counter()
    trainable = tune.with_parameters(
        run_trial,
        base=data.worker_config(det),
        scaling=scaling,
        storage=storage,
        experiment=experiment,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, driver),
        param_space=spec.space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=spec.epochs,
                grace_period=spec.grace_period or max(1, spec.epochs // 2),
                reduction_factor=2,
            ),
            search_alg=_searcher(spec, concurrent),
            num_samples=spec.trials,
            max_concurrent_trials=concurrent,
        ),
        run_config=tune.RunConfig(name=experiment, storage_path=storage, verbose=spec.verbose),
    )
    table = results_table(tuner.fit(), spec)
    table_url = f"{storage.rstrip('/')}/{experiment}/results"
    write_table(table, f"{table_url}.parquet")
    write_bytes_atomic(f"{table_url}.csv", table.to_csv(index=False).encode())
    best = best_row(table)
    params = {k: best[k].item() if hasattr(best[k], "item") else best[k] for k in spec.space()}
    outcome = SearchOutcome(
        best_params=params,
        best_val_auroc=float(best["final_val_auroc"]),
        best_trial=str(best["trial_id"]),
        checkpoint=str(best["checkpoint"]),
        table=table,
        table_url=table_url,
        wall_s=0.0,
        data=data,
    )
    if spec.refit:
        outcome.refit, outcome.checkpoint = _refit(
            det, params, data_url, storage, spec, scaling, label_column, f"{experiment}-refit"
        )
    outcome.wall_s = time.perf_counter() - started
    return outcome


def _refit(det, params, data_url, storage, spec, scaling, label_column, name):
    """The winner on every training row (fit + validation): +0.3 points, never worse, in a
    prototype's runs."""
    data: PreparedData = prepare_data(
        data_url, label_column=label_column, validation_fraction=None, scaling=det.scaling
    )
    winner = ESAD(**{**det.get_params(), **params})
    fitted, result = fit_distributed(winner, data, scaling, RunSpec(storage, name=name))
    return fitted, result.checkpoint.path


def _placement(scaling: Scaling, spec: SearchSpec) -> tuple[dict, int]:
    """Trial-driver resources and how many trials fit at once on this cluster."""
    have = ray.cluster_resources()
    uses_driver = have.get("trial_driver", 0) >= 1
    driver = {"cpu": 0, "trial_driver": 1} if uses_driver else {"cpu": 1}
    per_trial = scaling.workers * scaling.cpus_per_worker + (0 if uses_driver else 1)
    fits = int(have.get("CPU", 0) // per_trial)
    if scaling.use_gpu:
        fits = min(fits, int(have.get("GPU", 0) // scaling.workers))
    if fits < 1:
        raise ValueError(
            f"one trial needs {per_trial:g} CPUs{' and GPUs' if scaling.use_gpu else ''}; "
            f"the Ray cluster has {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs"
        )
    if uses_driver:
        fits = min(fits, int(have["trial_driver"]))
    return driver, min(fits, spec.max_concurrent or fits, spec.trials)


def _searcher(spec: SearchSpec, concurrent: int):
    """Tune wraps a model-based searcher in a ConcurrencyLimiter itself, but not the basic
    variant generator: that one must carry the limit."""
    if spec.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=spec.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=concurrent)


def results_table(grid, spec: SearchSpec) -> pd.DataFrame:
    """One row per trial: config, AUROC per epoch, final AUROC, wall time, status."""
    rows = []
    for i in range(len(grid)):
        r = grid[i]
        frame = r.metrics_dataframe
        history = [] if frame is None or METRIC not in frame else frame[METRIC].tolist()
        metrics = r.metrics or {}
        done = len(history)
        status = "error" if r.error else ("completed" if done >= spec.epochs else "stopped")
        rows.append(
            {
                "trial_id": metrics.get("trial_id", r.path.rsplit("/", 1)[-1]),
                **{k: r.config.get(k) for k in spec.space()},
                "status": status,
                "epochs_done": done,
                "final_val_auroc": history[-1] if history else math.nan,
                "final_val_auprc": metrics.get("val_auprc", math.nan),
                "val_auroc_by_epoch": json.dumps([_finite(v) for v in history]),
                "wall_s": metrics.get("time_total_s", math.nan),
                "checkpoint": metrics.get("checkpoint_path", ""),
                "error": "" if not r.error else str(r.error).splitlines()[0][:300],
            }
        )
    table = pd.DataFrame(rows)
    eligible = (table["status"] == "completed") & table["final_val_auroc"].notna()
    table["best"] = False
    if eligible.any():
        table.loc[table.loc[eligible, "final_val_auroc"].idxmax(), "best"] = True
    return table


def best_row(table: pd.DataFrame) -> pd.Series:
    """The completed trial with the highest final-epoch validation AUROC."""
    if not table["best"].any():
        errors = "; ".join(e for e in table["error"] if e)[:300]
        raise RuntimeError(f"no trial completed its epoch budget{': ' + errors if errors else ''}")
    return table.loc[table["best"]].iloc[0]


def trial_checkpoint(path: str, storage: str) -> ray.train.Checkpoint:
    """A checkpoint the results table names (a path on `storage`'s filesystem), loadable."""
    import pyarrow.fs as pafs

    if not path:
        raise ValueError("the trial reported no checkpoint")
    fs = pafs.FileSystem.from_uri(storage)[0] if "://" in storage else pafs.LocalFileSystem()
    return ray.train.Checkpoint(path=path, filesystem=fs)


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None
