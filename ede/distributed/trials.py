"""One Tune trial: where it runs, what it holds, and how it reports.

Ray's guide for Train V2 inside Tune: a trial that needs one worker does its work
directly in the trial's actor; a TorchTrainer per trial only when a trial needs
several workers. So a one-worker trial runs the core's `train_loop` right here
with a `TuneRuntime` (reports and checkpoints through `ray.tune`), and holds the
CPU (or GPU) it trains on; a multi-worker trial drives a TorchTrainer and holds
only a `trial_driver` unit where the cluster offers one, leaving the CPUs to its
workers. Both restart from their latest checkpoint when Tune retries them.
"""

from __future__ import annotations

import copy
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from ede.core.training import TrainConfig, planned_epochs, train_loop
from ede.distributed.cluster import Scaling
from ede.distributed.runtime import TuneRuntime
from ede.distributed.trainer import RunSpec, make_trainer

TRAIN_KEYS = ("lambda_entropy", "lambda_consistency", "eta", "lr")


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`train_loop`'s config with a trial's sampled parameters in place."""
    config = copy.copy(base)
    config["train"] = {**base["train"], **{k: params[k] for k in TRAIN_KEYS if k in params}}
    if "latent_dim" in params:
        config["net"] = {**base["net"], "latent_dim": int(params["latent_dim"])}
    return config


def run_trial(params: dict, *, base: dict, scaling: Scaling, storage: str, experiment: str):
    """Tune's trainable (its `base` config reaches every trial through the object store,
    put there once by `tune.with_parameters`)."""
    config = apply_params(base, params)
    if scaling.workers == 1:
        torch.set_num_threads(max(1, int(scaling.cpus_per_worker)))
        device = torch.device("cuda" if scaling.use_gpu else "cpu")
        steps = config["steps_per_epoch"]
        last = planned_epochs(TrainConfig(**config["train"]), steps) - 1
        train_loop(config, TuneRuntime(device, config.get("extra"), last_epoch=last))
        return
    trial_id = tune.get_context().get_trial_id()
    run = RunSpec(storage, name=f"{experiment}-{trial_id}", keep_checkpoints=1)
    make_trainer(config, scaling, run, callbacks=[TuneReportCallback()]).fit()


def placement(scaling: Scaling, max_concurrent: int | None, trials: int) -> tuple[dict, int]:
    """A trial's resources and how many trials fit at once: as many as the cluster's
    CPUs (and GPUs) allow, capped by `max_concurrent` and the trial count."""
    have = ray.cluster_resources()
    gpus = int(have.get("GPU", 0))
    if scaling.workers == 1:
        resources = {"cpu": scaling.cpus_per_worker, "gpu": 1 if scaling.use_gpu else 0}
        per_trial = scaling.cpus_per_worker
        fits = int(have.get("CPU", 0) // per_trial)
        if scaling.use_gpu:
            fits = min(fits, gpus)
    else:
        uses_driver = have.get("trial_driver", 0) >= 1
        resources = {"cpu": 0, "trial_driver": 1} if uses_driver else {"cpu": 1}
        per_trial = scaling.workers * scaling.cpus_per_worker + (0 if uses_driver else 1)
        fits = int(have.get("CPU", 0) // per_trial)
        if scaling.use_gpu:
            fits = min(fits, gpus // scaling.workers)
        if uses_driver:
            fits = min(fits, int(have["trial_driver"]))
    if fits < 1:
        raise ValueError(
            f"one trial needs {per_trial:g} CPUs{' and GPUs' if scaling.use_gpu else ''}; "
            f"the Ray cluster has {have.get('CPU', 0):g} CPUs, {gpus} GPUs"
        )
    return resources, min(fits, max_concurrent or fits, trials)
