"""Ray Train: one ESAD training on N workers, from a Parquet URL to a fitted `ESAD`.

`train_func` is the only code the workers run, and it is a thin shell around
`ede.training.train_loop`, the loop `ESAD.fit` runs in-process. What differs
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
from ede.data.shards import (
    ParquetLayout,
    ParquetShard,
    fit_scaler,
    inspect_parquet,
    read_labels,
    read_rows,
    split_rows,
)
from ede.distributed.cluster import Scaling
from ede.distributed.runtime import RayRuntime, load_checkpoint
from ede.storage import shown_url


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
    """What the driver knows about the table: layout, split, scaler; never the fit rows."""

    layout: ParquetLayout
    scaler: AffineScaler
    fit_rows: int
    val_rows: np.ndarray
    X_val: np.ndarray  # raw (unscaled)
    y_val: np.ndarray

    def worker_config(self, det: ESAD) -> dict[str, Any]:
        """`train_loop`'s config; the same (net, train) configs `det.fit` would use."""
        d = len(self.layout.feature_names)
        train = asdict(det.train_config())
        config: dict[str, Any] = {
            "net": asdict(det.net_config((d,))),
            "train": train,
            "data": ParquetShard(self.layout, self.scaler.to_dict(), self.val_rows),
            "steps_per_epoch": math.ceil(self.fit_rows / train["batch_size"]),
            "extra": {
                "scaler": self.scaler.to_dict(),
                "feature_names": list(self.layout.feature_names),
                "global_batch_size": train["batch_size"],
            },
        }
        if len(self.y_val):
            config["validation"] = (self.scaler.transform(self.X_val), self.y_val)
        return config


def prepare_data(
    url: str,
    *,
    label_column: str | None = "label",
    validation_fraction: float | None = 0.2,
    seed: int = 0,
    scaling: str = ESAD().scaling,
    validation_rows: np.ndarray | None = None,
) -> PreparedData:
    """Footer, label column, validation rows and a streaming scaler fit on the fit rows.

    `validation_rows` (row indices) takes a split made upstream (`ede.data.ingest`) as it
    is; else `validation_fraction` carves one; `None` trains on every row (the refit).
    """
    layout = inspect_parquet(url, label_column)
    y = read_labels(layout)
    if validation_rows is not None:
        val = np.asarray(validation_rows, dtype=np.int64)
        if len(val) and (val.min() < 0 or val.max() >= len(y)):
            raise ValueError(f"{shown_url(url)}: validation rows outside its {len(y)} rows")
    elif validation_fraction is None:
        val = np.empty(0, dtype=np.int64)
    else:
        _, val = split_rows(y, validation_fraction, seed)
    if (y == 0).sum() - (y[val] == 0).sum() == 0:
        raise ValueError(f"{shown_url(url)}: no unlabelled rows to train on")
    X_val, y_val = read_rows(layout, val)
    if scaling == "none":
        scaler = IdentityScaler().fit(np.zeros((1, len(layout.feature_names)), np.float32))
    else:
        scaler = fit_scaler(layout, val, scaling, seed)
    return PreparedData(layout, scaler, layout.n_rows - len(val), val, X_val, y_val)


# ----------------------------------------------------------------------------- fit


def fit_distributed(
    det: ESAD,
    data: PreparedData,
    scaling: Scaling,
    run: RunSpec,
) -> tuple[ESAD, ray.train.Result]:
    """Train `det`'s configuration on Ray Train; returns the fitted estimator and Ray's result.

    The score scales and training threshold are computed on the driver in a streaming
    pass over the fit rows, as `ESAD.fit` computes them in memory.
    """
    det._check_params()
    scaling.check()
    scaling.check_cluster()
    result = make_trainer(data.worker_config(det), scaling, run).fit()
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


def _score_fit_rows(net, data: PreparedData, scaler: AffineScaler):
    recs, ents, ys = [], [], []
    cpu = torch.device("cpu")
    for first, table in data.layout.groups(0, data.layout.n_rows):
        X, y = data.layout.arrays(table)
        keep = ~np.isin(np.arange(first, first + len(X)), data.val_rows)
        rec, ent = batched_scores(net, scaler.transform(X[keep]), cpu)
        recs.append(rec)
        ents.append(ent)
        ys.append(y[keep])
    return np.concatenate(recs), np.concatenate(ents), np.concatenate(ys)
