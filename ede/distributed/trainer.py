"""Ray Train: one ESAD training on N workers, from a Parquet URL to a fitted `ESAD`.

`train_func` is the only code the workers run, and it is a thin shell around
`ede.training.train_loop`, the loop `ESAD.fit` runs in-process. What differs
between this 2-core machine and a GPU cluster is configuration: worker count,
`use_gpu`, resources per worker, `RAY_ADDRESS` and the storage URL.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import numpy as np
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from ede.core.estimator import ESAD
from ede.core.scaling import AffineScaler, IdentityScaler
from ede.core.training import batched_scores, score_scales, train_loop
from ede.data.shards import (
    ParquetLayout,
    ParquetShard,
    fit_scaler,
    inspect_parquet,
    read_labels,
    read_rows,
    split_rows,
)
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


# ----------------------------------------------------------------------------- cluster


def connect(*, log_to_driver: bool = False) -> float:
    """Join `RAY_ADDRESS` if set, else start a local Ray; returns the seconds it took.

    A local start gets a custom `trial_driver` resource: Tune's trial drivers hold
    one unit of it and no CPU, so on 2 cores both CPUs stay with the workers.
    """
    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    env = controller_env()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver, runtime_env={"env_vars": env})
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local, loopback-only cluster
        os.environ.update(env)  # inherited by the local raylet, hence by every actor
        # The dashboard process serves Ray's State API, which Train V2's placement-group
        # cleaner needs: without it, every finished or stopped run leaks its CPUs.
        ray.init(
            resources={"trial_driver": 8},
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=log_to_driver,
        )
    return time.perf_counter() - start


@contextmanager
def ray_session(*, log_to_driver: bool = False) -> Iterator[float]:
    """Ray for the length of one job (a flow run): joined or started once, and shut down
    afterwards only if this job started it. Yields the seconds connecting took."""
    started = not ray.is_initialized()
    seconds = connect(log_to_driver=log_to_driver)
    try:
        yield seconds
    finally:
        if started:
            ray.shutdown()


def controller_env() -> dict[str, str]:
    """Ray Train's controller collects reports when it polls its workers, every 2 s by
    default, and a worker's report blocks until the previous one is collected: epochs
    shorter than 2 s would all last 2 s. Polling every 0.1 s keeps them at their own
    length (set RAY_TRAIN_HEALTH_CHECK_INTERVAL_S to override)."""
    return {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get(POLL_ENV, "0.1")}


POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


@dataclass(frozen=True)
class Scaling:
    """Workers of one training run; GPU runs get one GPU per worker."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0

    def check(self) -> None:
        """Configuration errors, before Ray is touched."""
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: need at least 1 worker")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker={self.cpus_per_worker}: must be > 0")
        if self.use_gpu and not os.environ.get("RAY_ADDRESS") and not torch.cuda.is_available():
            raise ValueError("--gpu: this machine has no CUDA GPU (and no RAY_ADDRESS cluster)")

    def check_cluster(self, runs: int = 1) -> None:
        """A run the cluster can never place would wait forever: fail with one line instead."""
        have = ray.cluster_resources()
        if self.use_gpu and have.get("GPU", 0) < self.workers:
            raise ValueError(
                f"--gpu with {self.workers} worker(s) needs {self.workers} GPU(s); "
                f"the Ray cluster has {int(have.get('GPU', 0))}"
            )
        need = self.workers * self.cpus_per_worker * runs
        if have.get("CPU", 0) < need:
            raise ValueError(
                f"{self.workers} worker(s) x {self.cpus_per_worker} CPU need {need:g} CPUs; "
                f"the Ray cluster has {have.get('CPU', 0):g}"
            )

    def config(self) -> ray.train.ScalingConfig:
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = 1
        return ray.train.ScalingConfig(
            num_workers=self.workers, use_gpu=self.use_gpu, resources_per_worker=resources
        )


def storage_path(url: str) -> str:
    """Check that `url` takes writes now (one small probe file), so a run never dies at its
    first checkpoint; returns the form Ray's RunConfig wants (local paths made absolute)."""
    if "://" not in url:
        url = os.path.abspath(url)
    probe = f"{url.rstrip('/')}/.ede-probe-{uuid.uuid4().hex}"
    try:
        fs, path = fsspec.core.url_to_fs(probe)
        if "file" in fs.protocol:
            fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(b"ok")
        fs.rm(path)
    except Exception as exc:  # every backend fails in its own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"storage {shown_url(url)} is not writable: {first}") from None
    return url


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
    s_rec, s_ent = score_scales(rec, ent, y)
    net.score_scale.copy_(torch.tensor([s_rec, s_ent]))
    scores = rec / s_rec + ent / s_ent
    det.net_ = net
    det.scaler_ = scaler
    det.input_shape_ = (len(data.layout.feature_names),)
    det.n_features_in_ = det.input_shape_[0]
    det.threshold_ = float(np.quantile(scores[y == 0], 1 - det.contamination))
    det.history_ = meta.get("history", [])
    det.feature_names_in_ = np.asarray(data.layout.feature_names, dtype=object)
    return det


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


def epoch_history(det: ESAD) -> list[dict[str, float]]:
    """Reported metrics per epoch, with the wall time of each epoch where known."""
    rows, last = [], None
    for m in det.history_:
        row = dict(m)
        if last is not None and "timestamp" in m:
            row["epoch_s"] = m["timestamp"] - last
        last = m.get("timestamp")
        rows.append(row)
    return rows
