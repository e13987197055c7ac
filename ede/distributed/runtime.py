"""`RayRuntime`: the `Runtime` of `ede.core.training` on a Ray Train worker.

The training loop only asks a runtime for its rank, its device, a prepared model,
a state to resume from and a place to report. Here those map onto Ray Train:
`prepare_model` wraps in DDP (gloo on CPU, NCCL on GPU) when there are 2+ workers,
`get_checkpoint` gives the latest registered checkpoint after a restart, and
`report` is a barrier that every rank calls once per epoch while only rank 0
attaches a checkpoint (Ray merges checkpoint folders from all ranks; one writer
keeps it one copy).

`TuneRuntime` is the same contract for a trial that needs one worker: the loop
runs in the trial's own actor (Ray's guide for Train V2 inside Tune), reporting
and checkpointing through `ray.tune`, with no worker group, placement group or
controller to start, which cost tens of seconds per trial for a second of work.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import ray.tune
import torch
from torch import nn

STATE_FILE, META_FILE = "state.pt", "meta.json"
# what `train_loop` resumes from; torch.save'd (weights_only loads them back), not JSON
TENSOR_KEYS = ("model", "optimizer", "epoch", "best_weights", "best")


class RayRuntime:
    """`extra` (JSON-able, e.g. the scaler) rides along in every checkpoint's meta.json."""

    def __init__(self, extra: dict[str, Any] | None = None):
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.extra = extra or {}
        self.history: list[dict[str, float]] = []

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(model)

    def restore(self) -> dict[str, Any] | None:
        return _resume(self, ray.train.get_checkpoint())

    def report(self, metrics: dict[str, float], state: Callable[[], dict] | None) -> None:
        # A wall-clock stamp per epoch: the driver derives epoch times from it.
        metrics = {**metrics, "timestamp": time.time(), "world_size": self.world_size}
        self.history.append(metrics)
        if self.rank != 0 or state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint_dir(Path(tmp), state(), {**self.extra, "history": self.history})
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class TuneRuntime:
    """One process in a Tune trial: the model on `device`, reports and checkpoints to Tune."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        device: torch.device,
        extra: dict[str, Any] | None = None,
        *,
        last_epoch: int,
        checkpoint_every: int = 5,
    ):
        self.device = device
        self.extra = extra or {}
        self.history: list[dict[str, float]] = []
        # Every report checkpointed would force a Tune experiment snapshot each time;
        # every k-th report and the last one bound the redo after a crash to k reports.
        self.last_epoch, self.checkpoint_every = last_epoch, checkpoint_every

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def restore(self) -> dict[str, Any] | None:
        return _resume(self, ray.tune.get_checkpoint())

    def report(self, metrics: dict[str, float], state: Callable[[], dict] | None) -> None:
        metrics = {**metrics, "timestamp": time.time(), "world_size": 1}
        self.history.append(metrics)
        due = len(self.history) % self.checkpoint_every == 0 or metrics["epoch"] == self.last_epoch
        if state is None or not due:
            ray.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint_dir(Path(tmp), state(), {**self.extra, "history": self.history})
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(tmp))


def _resume(runtime, checkpoint) -> dict[str, Any] | None:
    """The state to resume from (None: a fresh start); the reports so far carry on."""
    if checkpoint is None:
        return None
    state, meta = load_checkpoint(checkpoint)
    runtime.history = list(meta.get("history", []))
    return state


def write_checkpoint_dir(folder: Path, state: dict[str, Any], extra: dict[str, Any]) -> None:
    """Tensors in state.pt (model, optimizer, epoch, the loss guard's), everything else as
    JSON: no pickled code."""
    tensors = {k: state[k] for k in TENSOR_KEYS if k in state}
    buf = io.BytesIO()
    torch.save(tensors, buf)
    (folder / STATE_FILE).write_bytes(buf.getvalue())
    meta = {k: v for k, v in state.items() if k not in tensors}
    meta.update(extra, epoch=int(state["epoch"]))
    (folder / META_FILE).write_text(json.dumps(meta, default=_json_default))


def load_checkpoint(checkpoint) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state for `train_loop`, meta) from a checkpoint on any storage Ray supports."""
    with checkpoint.as_directory() as folder:
        raw = (Path(folder) / STATE_FILE).read_bytes()
        meta = json.loads((Path(folder) / META_FILE).read_text())
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return state, meta


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
