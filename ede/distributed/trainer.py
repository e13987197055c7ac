"""Ray Train: one ESAD training on N workers, from a Parquet URL to a fitted `ESAD`.

`train_func` is the only code the workers run, and it is a thin shell around
`ede.core.training.train_loop`, the loop `ESAD.fit` runs in-process. What differs
between this 2-core machine and a GPU cluster is configuration: worker count,
`use_gpu`, resources per worker, `RAY_ADDRESS` and the storage URL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from ede.core.estimator import ESAD
from ede.core.scaling import AffineScaler, IdentityScaler
from ede.core.training import batched_scores, train_loop
from ede.data.parquet_layout import (
    ParquetLayout,
    inspect_parquet,
    read_labels,
    read_rows,
    unlabelled_outside,
)
from ede.data.shard_scaler import fit_scaler, footer_scaler
from ede.data.shards import ParquetShard, ValidationRows, row_positions, split_rows
from ede.distributed.cluster import Scaling
from ede.distributed.runtime import RayRuntime, load_checkpoint
from ede.distributed.task_run import train_here, train_in_task
from ede.storage import join, shown_url


def train_func(config: dict[str, Any], runtime: Any = None) -> None:
    """Per-worker entry of every TorchTrainer here (Ray takes no tensors back: the model
    travels in checkpoints)."""
    run_worker(config, runtime)


def run_worker(config: dict[str, Any], runtime: Any = None) -> torch.nn.Module:
    """`train_loop` with the global batch split over ranks.

    `config["train"]["batch_size"]` is the global batch, so a run on 2 workers takes
    the same optimizer steps on the same amount of data per step as a run on 1.
    """
    torch.set_num_threads(int(config.get("threads", 1)))
    rt = runtime or RayRuntime(extra=config.get("extra"))
    train = dict(config["train"])
    train["batch_size"] = max(1, int(train["batch_size"]) // rt.world_size)
    return train_loop({**config, "train": train}, rt)


@dataclass(frozen=True)
class RunSpec:
    """Where a run keeps its checkpoints and how often it may restart."""

    storage: str
    name: str = field(default_factory=lambda: f"ede-train-{time.strftime('%Y%m%d-%H%M%S')}")
    max_failures: int = 0
    keep_checkpoints: int | None = 3
    # the caller is a Ray task holding one worker's resources: a one-worker run trains in
    # it (`task_run.train_here`), not in a task of its own
    in_this_task: bool = False

    def config(self, callbacks: list | None = None) -> ray.train.RunConfig:
        return ray.train.RunConfig(
            name=self.name,
            storage_path=self.storage,
            failure_config=ray.train.FailureConfig(
                max_failures=self.max_failures, controller_failure_limit=3
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=self.keep_checkpoints),
            callbacks=callbacks,
        )


def make_trainer(
    config: dict[str, Any],
    scaling: Scaling,
    run: RunSpec,
    *,
    callbacks: list | None = None,
    loop: Callable[[dict], Any] = train_func,
) -> TorchTrainer:
    return TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=scaling.config(),
        run_config=run.config(callbacks),
    )


# ----------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """What the driver knows about the table: layout, split, scaler; never the fit rows.

    The validation rows' features (`X_val`, raw) are read on first use: the workers read
    their own copy where they train (`ValidationRows`), the driver only for the model
    folder's calibration."""

    layout: ParquetLayout
    scaler: AffineScaler
    fit_rows: int
    val_rows: np.ndarray
    y_val: np.ndarray
    _X_val: np.ndarray | None = field(default=None, repr=False)

    @property
    def X_val(self) -> np.ndarray:
        if self._X_val is None:
            self._X_val = read_rows(self.layout, self.val_rows)[0]
        return self._X_val

    def worker_config(self, det: ESAD) -> dict[str, Any]:
        """`train_loop`'s config; the same (net, train) configs `det.fit` would use."""
        d = len(self.layout.feature_names)
        train = asdict(det.train_config())
        scaler = self.scaler.to_dict()
        config: dict[str, Any] = {
            "net": asdict(det.net_config((d,))),
            "train": train,
            "data": ParquetShard(self.layout, scaler, self.val_rows),
            "steps_per_epoch": math.ceil(self.fit_rows / train["batch_size"]),
            "extra": {
                "scaler": scaler,
                "feature_names": list(self.layout.feature_names),
                "global_batch_size": train["batch_size"],
            },
        }
        if len(self.y_val):  # a reference to the rows, read on each worker
            config["validation"] = ValidationRows(self.layout, scaler, self.val_rows)
        return config


def prepare_data(
    url: str,
    *,
    label_column: str | None = "label",
    validation_fraction: float | None = 0.2,
    seed: int = 0,
    scaling: str = ESAD().scaling,
    validation_rows: np.ndarray | None = None,
    scaler: dict | None = None,
    id_columns: list[str] | None = None,
    feature_columns: list[str] | None = None,
) -> PreparedData:
    """Footer, labels, the validation split and the scaler; never the fit rows' features.

    `validation_rows` (row indices) takes a split made upstream (`ede.data.ingest`) as it
    is, reading only those rows' labels; else `validation_fraction` carves one from the
    label column; `None` trains on every row (the refit). `scaler` ({"offset", "scale"},
    e.g. `PreparedSplits.scaler`, whose "kind" must then be `scaling`) is taken as it is;
    without it, the one ingest wrote into the table's footer is taken when it was fitted
    on these very fit rows (`ede.data.shard_scaler.footer_scaler`), else one is fitted here in a
    streaming pass. The features are every column but the label and `id_columns`, or
    `feature_columns` as given (a refit's: the search's own).
    """
    layout = inspect_parquet(url, label_column, feature_columns, id_columns)
    n = layout.n_rows
    if validation_rows is not None:
        val = row_positions(validation_rows)
        if len(val) and (val[0] < 0 or val[-1] >= n):
            raise ValueError(f"{shown_url(url)}: validation rows outside its {n} rows")
        y_val, unlabelled = read_labels(layout, val), unlabelled_outside(layout, val)
    else:
        y = read_labels(layout)
        if validation_fraction is None:
            val = np.empty(0, dtype=np.int64)
        else:
            _, val = split_rows(y, validation_fraction, seed)
        y_val, unlabelled = y[val], int((y == 0).sum() - (y[val] == 0).sum())
        del y
    if unlabelled == 0:
        raise ValueError(f"{shown_url(url)}: no unlabelled rows to train on")
    if scaler is not None:
        if scaler.get("kind", scaling) != scaling:
            raise ValueError(f"scaler of kind {scaler['kind']!r} given for scaling={scaling!r}")
        fitted = AffineScaler.from_dict(scaler)
    elif scaling == "none":
        fitted = IdentityScaler().fit(np.zeros((1, len(layout.feature_names)), np.float32))
    elif (recorded := footer_scaler(layout, val, scaling, seed)) is not None:
        fitted = AffineScaler.from_dict(recorded)
    else:
        fitted = fit_scaler(layout, val, scaling, seed)
    return PreparedData(layout, fitted, n - len(val), val, y_val)


def every_row(data: PreparedData) -> PreparedData:
    """`data`'s table with no row held out, scaled as `data` is: what a refit of the chosen
    configuration trains on (the fit rows and the validation rows it was chosen on)."""
    return prepare_data(
        data.layout.url,
        label_column=data.layout.label_column,
        validation_fraction=None,
        scaler=data.scaler.to_dict(),
        feature_columns=list(data.layout.feature_names),  # id columns stay out
    )


# ----------------------------------------------------------------------------- fit


def fit_distributed(
    det: ESAD,
    data: PreparedData,
    scaling: Scaling,
    run: RunSpec,
) -> tuple[ESAD, ray.train.Result]:
    """Train `det`'s configuration on Ray (Ray Train for several workers, one task for one);
    returns the fitted estimator and the run's result (`.checkpoint`, `.path`).

    The score scales and training threshold are computed on the driver in a streaming
    pass over the fit rows, as `ESAD.fit` computes them in memory.
    """
    det._check_params()
    scaling.check()
    scaling.check_cluster()
    config = data.worker_config(det)
    if scaling.workers == 1 and run.in_this_task:
        result = train_here(
            config, join(run.storage, run.name), gpu=scaling.use_gpu, keep=run.keep_checkpoints
        )
    elif scaling.workers == 1:  # one process: a task, not a worker group (ede.distributed.task_run)
        result = train_in_task(
            config,
            join(run.storage, run.name),
            cpus=scaling.cpus_per_worker,
            gpu=scaling.use_gpu,
            keep=run.keep_checkpoints,
            retries=run.max_failures,
        )
    else:
        result = make_trainer(config, scaling, run).fit()
    return estimator_from_checkpoint(det, result.checkpoint, data), result


def estimator_from_checkpoint(
    det: ESAD, checkpoint: ray.train.Checkpoint, data: PreparedData
) -> ESAD:
    from ede.core.model import EncoderDecoderEncoder
    from ede.core.nets import NetConfig

    state, meta = load_checkpoint(checkpoint)
    cfg = meta["net"]
    net_cfg = NetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    net = EncoderDecoderEncoder(net_cfg, share_encoders=bool(det.share_encoders))
    net.load_state_dict(state["model"])
    net.eval()
    # The scaler the weights were trained with travels in the checkpoint; `data` may have
    # been prepared again since (a percentile fit on a seeded sample of a large table).
    scaler = AffineScaler.from_dict(meta["scaler"]) if "scaler" in meta else data.scaler
    rec, ent, y = _score_fit_rows(net, data, scaler)
    names = list(data.layout.feature_names)
    return det.finish_fit(net, scaler, rec, ent, y, meta.get("history", []), names)


SCORE_ON_RAY_ROWS = 4_000_000  # fit rows from which the scoring pass runs in Ray tasks


def _score_fit_rows(net, data: PreparedData, scaler: AffineScaler):
    """(rec, ent, y) of every fit row, in table order, for the score scales and the training
    threshold. A whole pass over the table, so from SCORE_ON_RAY_ROWS fit rows on (with Ray
    up) it runs in Ray tasks, one per run of row groups, as many as the cluster has free
    CPUs (at most 4), not in the driver. Below that the driver does it: starting tasks
    (worker processes importing torch) costs more than such a pass (measured on one
    core: 2.4M fit rows in 6.3 s in the driver, 18-20 s in cold tasks, 6 s in warm
    ones). The driver's memory is the same either way: the three arrays it gets back
    (9 bytes a row) and one row group."""
    groups = _fit_groups(data)
    if not ray.is_initialized() or not groups or data.fit_rows < SCORE_ON_RAY_ROWS:
        rec, ent, y = _score_groups(net, data.layout, scaler.to_dict(), data.val_rows, groups)
        return rec, ent, y.astype(np.int64)
    free = int(ray.available_resources().get("CPU", 1))
    n_parts = max(1, min(len(groups), free, 4))
    parts = [[int(i) for i in p] for p in np.array_split(groups, n_parts) if len(p)]
    task = ray.remote(num_cpus=1)(_score_groups_task)
    net_ref = ray.put(net.cpu())
    refs = [
        task.remote(net_ref, data.layout, scaler.to_dict(), data.val_rows, part) for part in parts
    ]
    rec, ent, y = (np.concatenate(part) for part in zip(*ray.get(refs), strict=True))
    return rec, ent, y.astype(np.int64)


def _fit_groups(data: PreparedData) -> list[int]:
    """Row groups holding at least one fit row (a group of validation rows only: none)."""
    starts = data.layout.group_starts
    skipped = np.diff(np.searchsorted(data.val_rows, starts))
    return [i for i, n in enumerate(data.layout.group_rows) if n > skipped[i]]


def _score_groups_task(*args):
    torch.set_num_threads(1)  # the task holds one CPU
    return _score_groups(*args)


def _score_groups(net, layout: ParquetLayout, scaler: dict, skip: np.ndarray, groups):
    """(rec float32, ent float32, y int8) of the kept rows of `groups`, in order."""
    recs, ents, ys = [], [], []
    cpu, fitted = torch.device("cpu"), AffineScaler.from_dict(scaler)
    for _, first, table in layout.indexed_groups(groups):
        X, y = layout.arrays(table)
        keep = ~np.isin(np.arange(first, first + len(X)), skip, assume_unique=True)
        rec, ent = batched_scores(net, fitted.transform(X[keep]), cpu)
        recs.append(rec)
        ents.append(ent)
        ys.append(y[keep].astype(np.int8))
    if not recs:
        return np.empty(0, np.float32), np.empty(0, np.float32), np.empty(0, np.int8)
    return np.concatenate(recs), np.concatenate(ents), np.concatenate(ys)
