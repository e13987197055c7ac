"""The per-worker training loop: ONE copy of the training math.

`ESAD.fit` calls `train_loop` in-process with a `LocalRuntime`; Ray Train's
workers call the very same function with a runtime that wraps the model in DDP,
reports to Ray and checkpoints. Everything distributed hides behind `Runtime`,
so this module imports neither Ray nor any storage library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ede.core.loss_guard import LossGuard
from ede.core.metrics import evaluate
from ede.core.model import EncoderDecoderEncoder, anomaly_score
from ede.core.nets import NetConfig
from ede.core.objective import corrupt, esad_objective
from ede.core.precision import autocast, resolve


@dataclass(frozen=True)
class TrainConfig:
    """What one training run does; no defaults here: `ESAD.train_config()` fills it from
    the estimator's parameters, the one place defaults live."""

    lambda_entropy: float
    lambda_consistency: float
    eta: float
    epochs: int
    min_steps: int | None  # train more epochs when `epochs` would make fewer steps
    max_steps: int | None  # stop after the epoch that reaches this many optimizer steps
    batch_size: int
    lr: float
    lr_decay_fraction: float  # the learning rate falls linearly to 0 over this last share
    weight_decay: float
    anomaly_target: str
    share_encoders: bool
    seed: int
    precision: str  # "fp32" | "bf16" | "auto" (ede.core.precision), resolved per worker


class Runtime(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: nn.Module) -> nn.Module: ...
    def restore(self) -> dict[str, Any] | None: ...
    def report(self, metrics: dict[str, float], state: Callable[[], dict] | None) -> None: ...


class LocalRuntime:
    """One process, no checkpoints: metrics are kept in `history`."""

    rank = 0
    world_size = 1

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.history: list[dict[str, float]] = []

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def restore(self) -> dict[str, Any] | None:
        return None

    def report(self, metrics: dict[str, float], state: Callable[[], dict] | None) -> None:
        self.history.append(metrics)


def train_loop(config: dict[str, Any], runtime: Runtime | None = None) -> EncoderDecoderEncoder:
    """Train one ESAD network on this worker's shard and return it (unwrapped, eval mode).

    config: "net" (NetConfig fields), "train" (TrainConfig fields), "data" (a callable
    (rank, world_size) -> (X, y) of this worker's already-scaled shard), optional
    "validation" ((X_val, y_val), scored whole on every rank, so each rank reports
    the same global metric), optional "steps_per_epoch" (equal on all ranks: DDP
    needs every rank to step equally often), optional "report_every" (report, with
    validation metrics and a checkpoint, every k epochs and after the last; default 1).
    """
    rt = runtime or LocalRuntime()
    net_cfg = NetConfig(**config["net"])
    cfg = TrainConfig(**config["train"])
    torch.manual_seed(cfg.seed)  # same init on every rank; DDP also broadcasts rank 0's
    X, y = config["data"](rt.rank, rt.world_size)
    x_all = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=rt.device)
    y_all = torch.as_tensor(np.asarray(y), dtype=torch.int64, device=rt.device)
    layout = memory_layout(x_all)

    model = EncoderDecoderEncoder(net_cfg, share_encoders=cfg.share_encoders)
    model.to(rt.device, memory_format=layout)
    # fused Adam: one kernel for all parameters; with these small nets the optimizer's
    # per-tensor loop is a large share of a step (about 30% on one CPU thread).
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    start_epoch = 0
    guard = LossGuard()
    if (state := rt.restore()) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        guard.load(state)
        start_epoch = int(state["epoch"]) + 1
    wrapped = rt.prepare_model(model)
    net = getattr(wrapped, "module", wrapped)

    steps = config.get("steps_per_epoch") or math.ceil(len(x_all) / cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed * 1009 + rt.rank)
    weights = dict(
        lambda_entropy=cfg.lambda_entropy,
        lambda_consistency=cfg.lambda_consistency,
        eta=cfg.eta,
        anomaly_target=cfg.anomaly_target,
    )

    n_epochs = planned_epochs(cfg, steps)
    every = max(1, int(config.get("report_every", 1)))
    precision = resolve(cfg.precision, rt.device)
    for _ in range(start_epoch):
        skip_epoch(gen, x_all, cfg.batch_size, steps, cfg.anomaly_target)
    for epoch in range(start_epoch, n_epochs):
        wrapped.train()
        # on the device: read once per epoch, not synchronised every step
        sums = torch.zeros(4, device=rt.device)
        for step, idx in enumerate(epoch_batches(len(x_all), cfg.batch_size, steps, gen)):
            set_learning_rate(optimizer, cfg, epoch * steps + step, n_epochs * steps)
            xb, yb = x_all[idx].contiguous(memory_format=layout), y_all[idx]
            with autocast(precision, rt.device):
                outputs = wrapped(xb)
            outputs = [o.float() for o in outputs]  # the loss terms in fp32
            terms = esad_objective(xb, *outputs, yb, generator=gen, **weights)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            sums += torch.stack([t.detach() for t in terms])
        means = epoch_means(sums, steps, rt.world_size)
        metrics = {"epoch": epoch, **dict(zip(_TERM_NAMES, means, strict=True))}
        guard.observe(epoch, metrics["loss"], net)
        last = epoch == n_epochs - 1
        if last:  # the weights a spiked last epoch left are never the ones returned
            metrics.update(guard.settle(epoch, metrics["loss"], net))
        if (epoch + 1) % every and not last:
            continue  # not a report epoch: no validation pass, no checkpoint
        if "validation" in config:
            metrics.update(validation_metrics(net, *config["validation"], rt.device))
        rt.report(
            metrics,
            lambda e=epoch: {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": e,
                "net": asdict(net_cfg),
                "train": asdict(cfg),
                **guard.state(),
            },
        )
    return net.to(memory_format=torch.contiguous_format).eval()


def set_learning_rate(optimizer, cfg: TrainConfig, step: int, total_steps: int) -> None:
    """Constant `lr`, then a linear decay to 0 over the last `lr_decay_fraction` of the
    run's steps: the weights a fit ends with come from steps too small to throw them off.
    A function of the step alone, so a resumed run follows the same schedule."""
    decay_steps = cfg.lr_decay_fraction * total_steps
    factor = 1.0 if decay_steps <= 0 else min(1.0, (total_steps - step) / decay_steps)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * factor


def epoch_means(sums: torch.Tensor, steps: int, world_size: int) -> list[float]:
    """The epoch's mean loss terms over every rank's batches: all ranks see the same
    figures, so the loss guard decides alike on each."""
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
        sums = sums / world_size
    return (sums / steps).tolist()


def memory_layout(x: torch.Tensor) -> torch.memory_format:
    """Images train channels-last: oneDNN's (and cuDNN's) convolutions are faster in it
    (an epoch at the image defaults, one CPU thread: 4.5-4.7 s -> 2.5-3.0 s,
    benchmarks/image_layout.py). The trained net leaves `train_loop` in the default
    layout, so what is saved, scored and exported is laid out as before."""
    return torch.channels_last if x.dim() == 4 else torch.contiguous_format


def skip_epoch(
    gen: torch.Generator, x_all: torch.Tensor, batch_size: int, steps: int, anomaly_target: str
) -> None:
    """Draw from `gen` what one epoch of training draws, training nothing.

    A run resumed from epoch k's checkpoint skips k epochs this way, so it goes on with
    the very batches (and corruption noise) the uninterrupted run took: a worker lost
    mid-run changes no weight, only the wall time.
    """
    epoch_batches(len(x_all), batch_size, steps, gen)
    like = torch.empty((batch_size, *x_all.shape[1:]), dtype=x_all.dtype)
    for _ in range(steps):
        corrupt(like, anomaly_target, gen)


def planned_epochs(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """`epochs`, clipped so that training makes between `min_steps` and `max_steps` steps.

    Epochs alone tie the optimizer's work to the data size: 100 epochs are 100 steps
    on 113 rows and 11,000 on 29,000. The floor keeps small sets from being
    under-trained, the cap keeps cost flat on large ones (in Lightning's terms,
    min_steps and max_steps). Whole epochs only, so every epoch is reported alike.
    """
    epochs = cfg.epochs
    if cfg.min_steps is not None:
        epochs = max(epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    if cfg.max_steps is not None:
        epochs = min(epochs, math.ceil(cfg.max_steps / steps_per_epoch))
    return max(1, epochs)


_TERM_NAMES = ("loss", "reconstruction", "entropy", "consistency")


def epoch_batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> torch.Tensor:
    """One epoch's `steps` batches of row indices, (steps, batch_size), drawn from fresh
    permutations of the rows: labelled anomalies keep their natural share per batch."""
    return _cycle_perm(n, steps * batch_size, gen).view(steps, batch_size)


def _cycle_perm(n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """`length` indices that run through fresh permutations of range(n)."""
    reps = math.ceil(length / n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:length]


@torch.no_grad()
def batched_scores(net: EncoderDecoderEncoder, X, device, batch_size: int = 4096):
    """(rec, ent) per row, in batches, without gradients."""
    net.eval()
    recs, ents = [], []
    for start in range(0, len(X), batch_size):
        xb = torch.as_tensor(X[start : start + batch_size], dtype=torch.float32, device=device)
        rec, ent = net.score_parts(xb)
        recs.append(rec.cpu())
        ents.append(ent.cpu())
    return torch.cat(recs).numpy(), torch.cat(ents).numpy()


def validation_metrics(net: EncoderDecoderEncoder, X_val, y_val, device) -> dict[str, float]:
    """Unweighted AUROC/AUPRC of the score on the validation split.

    Mid-training the score scales are not fitted yet, so each term is scaled by its
    mean over the validation split's unlabelled rows, the same rule `fit` applies to
    the training rows at the end.
    """
    was_training = net.training
    rec, ent = batched_scores(net, X_val, device)
    net.train(was_training)
    s_rec, s_ent = score_scales(rec, ent, y_val)
    return {
        f"val_{k}": v for k, v in evaluate(y_val, anomaly_score(rec, ent, s_rec, s_ent)).items()
    }


def score_scales(rec, ent, y) -> tuple[float, float]:
    """Mean of each score term over the unlabelled rows (all rows if none are)."""
    keep = np.asarray(y) != 1
    if not keep.any():
        keep = np.ones(len(rec), dtype=bool)
    tiny = np.finfo(np.float32).tiny
    return max(float(rec[keep].mean()), tiny), max(float(ent[keep].mean()), tiny)


class ArrayShard:
    """In-memory data for `train_loop`: rank r of w gets rows r, r+w, r+2w, ..."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X, self.y = X, y

    def __call__(self, rank: int, world_size: int):
        return self.X[rank::world_size], self.y[rank::world_size]
