"""A one-worker training as one Ray task: `train_loop` in a single process, no worker group.

Ray's guide (Train V2) keeps a TorchTrainer for runs that need several workers; for
one, its controller, worker group, synchronisation and preemption actors are four
more processes to start (tens of seconds on a busy 2-core machine) around seconds of
work. So a run with `Scaling.workers == 1` (`ede train --workers 1`, the flow's
training and refit) is one task holding the CPUs (or the GPU) that worker would hold,
training exactly as that worker would: same shard (the whole of it), batch, seed and
threads, hence the same weights.

It keeps what the TorchTrainer gave: checkpoints under `<storage>/<name>/` in the
same format (`checkpoint_<report>/state.pt` and `meta.json`, the latter written
last, so a checkpoint without it is ignored), the last `keep` of them, and a restart
from the latest one when Ray retries the task after its process died (`max_failures`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import ray
import torch
from torch import nn

from ede.core.training import TrainConfig, planned_epochs, train_loop
from ede.distributed.runtime import META_FILE, STATE_FILE, load_checkpoint, write_checkpoint_dir
from ede.storage import join, read_bytes, remove, write_bytes_atomic

PREFIX = "checkpoint_"


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint folder at a URL; `as_directory` as Ray's `Checkpoint` offers it, so
    `ede.distributed.runtime.load_checkpoint` reads either."""

    path: str

    def as_directory(self):
        return _Downloaded(self.path)


@dataclass(frozen=True)
class TaskResult:
    """What `fit_distributed` takes from a run: its last checkpoint and the run's folder."""

    checkpoint: StoredCheckpoint
    path: str


class TaskRuntime:
    """`Runtime` of `ede.core.training` for the one process of the task."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        url: str,
        device: torch.device,
        extra: dict[str, Any],
        *,
        last_epoch: int,
        keep: int | None,
    ):
        self.url, self.device, self.extra = url, device, extra
        self.last_epoch, self.keep = last_epoch, max(1, keep or 10**9)  # None: keep all
        self.history: list[dict[str, float]] = []
        self.saved: list[str] = []

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def restore(self) -> dict[str, Any] | None:
        self.saved = complete_checkpoints(self.url)
        if not self.saved:
            return None
        state, meta = load_checkpoint(StoredCheckpoint(self.saved[-1]))
        self.history = list(meta.get("history", []))
        return state

    def report(self, metrics: dict[str, float], state: Callable[[], dict] | None) -> None:
        metrics = {**metrics, "timestamp": time.time(), "world_size": 1}
        self.history.append(metrics)
        due = len(self.history) % CHECKPOINT_EVERY == 0 or metrics["epoch"] == self.last_epoch
        if state is None or not due:
            return
        target = join(self.url, f"{PREFIX}{len(self.history):06d}")
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint_dir(Path(tmp), state(), {**self.extra, "history": self.history})
            for name in (STATE_FILE, META_FILE):  # meta.json last: it marks a whole checkpoint
                write_bytes_atomic(join(target, name), Path(tmp, name).read_bytes())
        self.saved.append(target)
        for old in self.saved[: -self.keep]:
            remove(old, recursive=True)
        self.saved = self.saved[-self.keep :]


CHECKPOINT_EVERY = 5  # reports; and the last one: a crash redoes at most 5 reports


def complete_checkpoints(url: str) -> list[str]:
    """URLs of the checkpoints under `url` that have their meta.json, oldest first."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    kept = [n for n in names if n.startswith(PREFIX) and fs.exists(f"{path}/{n}/{META_FILE}")]
    return [join(url, n) for n in kept]


def train_in_task(
    config: dict[str, Any], url: str, *, cpus: float, gpu: bool, keep: int | None, retries: int
) -> TaskResult:
    """Run `config` (a `PreparedData.worker_config`) as one task; returns a `TaskResult`."""
    remote = ray.remote(num_cpus=cpus, num_gpus=1 if gpu else 0, max_retries=retries)(_task)
    last = remote.remote(config, url, gpu, keep)
    return TaskResult(StoredCheckpoint(ray.get(last)), url)


def train_here(config: dict[str, Any], url: str, *, gpu: bool, keep: int | None) -> TaskResult:
    """The same run in this process, for a caller that is itself a Ray task holding the
    worker's resources (the retraining flow's train step): a second task would start one
    more process, importing torch again, to do what this one can. Ray's retries of the
    caller's task resume from the run's latest checkpoint, as `train_in_task`'s do."""
    return TaskResult(StoredCheckpoint(_task(config, url, gpu, keep)), url)


def _task(config: dict[str, Any], url: str, gpu: bool, keep: int | None) -> str:
    torch.set_num_threads(int(config.get("threads", 1)))
    device = torch.device("cuda" if gpu else "cpu")
    steps = config["steps_per_epoch"]
    last_epoch = planned_epochs(TrainConfig(**config["train"]), steps) - 1
    runtime = TaskRuntime(url, device, config.get("extra") or {}, last_epoch=last_epoch, keep=keep)
    train_loop(config, runtime)
    return runtime.saved[-1]


class _Downloaded:
    """The checkpoint's two files in a local temporary folder for the `with` block."""

    def __init__(self, url: str):
        self.url = url
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> str:
        self._tmp = tempfile.TemporaryDirectory(prefix="ede-checkpoint-")
        for name in (STATE_FILE, META_FILE):
            Path(self._tmp.name, name).write_bytes(read_bytes(join(self.url, name)))
        return self._tmp.name

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
