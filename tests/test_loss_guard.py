"""A fit never returns the weights of a loss spike (ede.core.loss_guard), and the
learning-rate schedule that makes spikes rare is a function of the step alone."""

from __future__ import annotations

import copy
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from ede import ESAD
from ede.core.loss_guard import TOLERANCE, LossGuard
from ede.core.loss_tail import loss_tail, loss_tail_line
from ede.core.training import LocalRuntime, set_learning_rate, train_loop


class Spiking(nn.Module):
    """Wraps the net as DDP would (`.module`) and, at training forward call `at`, throws
    the weights off as one oversized Adam step would: every parameter scaled by 5."""

    def __init__(self, net: nn.Module, at: int):
        super().__init__()
        self.module, self.at, self.calls = net, at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                with torch.no_grad():
                    for p in self.module.parameters():
                        p.mul_(5.0)
        return self.module(x)


class Runtime(LocalRuntime):
    """In process; spikes at forward call `spike_at` (None: never); keeps every report's
    state; resumes from `resume_from`."""

    def __init__(self, spike_at=None, resume_from=None, start_calls=0):
        super().__init__()
        self.spike_at, self.resume_from, self.start_calls = spike_at, resume_from, start_calls
        self.states = {}

    def prepare_model(self, model):
        if self.spike_at is None:
            return model
        wrapped = Spiking(model, self.spike_at)
        wrapped.calls = self.start_calls
        return wrapped

    def restore(self):
        return self.resume_from

    def report(self, metrics, state):
        super().report(metrics, state)
        self.states[metrics["epoch"]] = copy.deepcopy(state())


EPOCHS, BATCH, ROWS = 8, 50, 400  # 8 steps an epoch


def _config(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((ROWS, 6), dtype=np.float32)
    y = (rng.random(ROWS) < 0.05).astype(np.int64)
    det = ESAD(seed=seed, epochs=EPOCHS, min_steps=None, max_steps=None, batch_size=BATCH)
    return {
        "net": asdict(det.net_config((6,))),
        "train": asdict(det.train_config()),
        "data": lambda rank, world: (X, y),
    }


def test_a_spike_in_the_last_epoch_returns_the_best_epochs_weights():
    """The spike lands on the last epoch's first step: that epoch's loss is many times the
    run's lowest, so the loop ends with the weights it had at the lowest-loss epoch, and
    the last history entry says which epoch those are and their loss."""
    steps = ROWS // BATCH
    rt = Runtime(spike_at=(EPOCHS - 1) * steps + 1)
    net = train_loop(_config(), rt)
    losses = [h["loss"] for h in rt.history]
    best = int(np.argmin(losses))
    assert losses[-1] > 3 * min(losses)  # the fault took: a spike the guard must catch
    last = rt.history[-1]
    assert last["kept_epoch"] == best < EPOCHS - 1
    assert last["kept_loss"] == pytest.approx(min(losses))
    for k, v in net.state_dict().items():
        assert torch.equal(v, rt.states[best]["model"][k]), k
    # what the last checkpoint holds is the kept model, so Ray's paths ship it too
    for k, v in rt.states[EPOCHS - 1]["model"].items():
        assert torch.equal(v, net.state_dict()[k]), k


def test_without_a_spike_the_last_epochs_weights_are_returned():
    rt = Runtime()
    net = train_loop(_config(), rt)
    losses = [h["loss"] for h in rt.history]
    assert losses[-1] <= TOLERANCE * min(losses)
    assert rt.history[-1]["kept_epoch"] == EPOCHS - 1
    assert rt.history[-1]["kept_loss"] == losses[-1]
    assert all("kept_epoch" not in h for h in rt.history[:-1])
    for k, v in net.state_dict().items():
        assert torch.equal(v, rt.states[EPOCHS - 1]["model"][k]), k


def test_a_resumed_run_keeps_the_guards_memory():
    """Resumed after its best epoch, a run that spikes at the end keeps the same weights as
    the uninterrupted run: the best epoch's copy rides in the checkpoint."""
    steps = ROWS // BATCH
    spike = (EPOCHS - 1) * steps + 1
    whole = Runtime(spike_at=spike)
    net = train_loop(_config(), whole)
    kept = whole.history[-1]["kept_epoch"]
    resume_at = EPOCHS - 2
    assert kept <= resume_at
    resumed = Runtime(spike_at=spike, resume_from=whole.states[resume_at])
    resumed.start_calls = (resume_at + 1) * steps
    again = train_loop(_config(), resumed)
    assert resumed.history[-1]["kept_epoch"] == kept
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_a_nan_epoch_is_never_kept():
    guard = LossGuard()
    net = nn.Linear(2, 1)
    guard.observe(0, 1.0, net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.fill_(float("nan"))
    guard.observe(1, float("nan"), net)
    assert guard.settle(1, float("nan"), net) == {"kept_epoch": 0, "kept_loss": 1.0}
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    cfg = ESAD(lr=1e-3, lr_decay_fraction=0.25).train_config()
    opt = torch.optim.Adam(nn.Linear(2, 1).parameters(), lr=cfg.lr)
    lrs = []
    for step in range(100):
        set_learning_rate(opt, cfg, step, 100)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:76] == [1e-3] * 76
    assert lrs[99] == pytest.approx(1e-3 / 25)
    assert all(a > b > 0 for a, b in zip(lrs[75:], lrs[76:], strict=False))
    none = ESAD(lr=1e-3, lr_decay_fraction=0.0).train_config()
    set_learning_rate(opt, none, 99, 100)
    assert opt.param_groups[0]["lr"] == 1e-3


def test_loss_tail_names_the_kept_epoch_and_the_spike():
    history = [{"epoch": e, "loss": v} for e, v in enumerate([1.0, 0.5, 0.2, 0.1, 0.4])]
    history[-1].update(kept_epoch=3, kept_loss=0.1)
    tail = loss_tail(history, epochs=3)
    assert tail["epochs"] == [2, 3, 4] and tail["losses"] == [0.2, 0.1, 0.4]
    assert (tail["min_epoch"], tail["kept_epoch"]) == (3, 3)
    line = loss_tail_line(tail)
    assert "kept epoch 3's weights" in line and "4x" in line
    assert loss_tail([]) == {}


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_a_decay_fraction_outside_0_1_names_itself(value):
    X = np.random.default_rng(0).random((50, 3))
    with pytest.raises(ValueError, match="lr_decay_fraction"):
        ESAD(lr_decay_fraction=value).fit(X)
