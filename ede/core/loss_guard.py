"""The guard against shipping a loss spike: a fit never returns weights whose epoch loss
is far above the loss its run had already reached.

Adam's step is normalised by a running gradient scale that shrinks as training settles,
so one batch with a far larger gradient (a heavy-tailed row, a labelled anomaly whose
code nears the origin) can throw the weights off late in a run (benchmarks/loss_spikes.py).
The learning-rate decay of `ede.core.training` makes that rare; this guard holds
whatever the cause. It keeps a copy of the weights at the end of the epoch
with the lowest mean training loss, and if the last epoch's loss is more than
`tolerance` times that, the run ends with the copy. Its state rides in every checkpoint,
so a resumed run decides as the uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

TOLERANCE = 1.1  # last epoch's loss over the best before the best epoch's weights are kept


class LossGuard:
    def __init__(self, tolerance: float = TOLERANCE):
        self.tolerance = tolerance
        self.best_epoch = -1
        self.best_loss = math.inf
        self.best_weights: dict[str, torch.Tensor] | None = None
        self._live: dict[str, torch.Tensor] | None = None  # views of the net's weights

    def observe(self, epoch: int, loss: float, net: nn.Module) -> None:
        """Remember `net`'s weights at the end of `epoch` if its loss is the run's lowest.
        The copy is refreshed in place: small nets train epochs of a few steps, where a
        new state dict per epoch would cost a noticeable share of the fit."""
        if not loss < self.best_loss:  # NaN never is: a diverged epoch is never kept
            return
        self.best_epoch, self.best_loss = epoch, float(loss)
        if self._live is None:  # the first copy (also after a resume): made once
            self._live = net.state_dict()  # detached views: the optimizer updates in place
            self.best_weights = {k: v.clone() for k, v in self._live.items()}
            return
        with torch.no_grad():
            for k, v in self._live.items():
                self.best_weights[k].copy_(v)

    def settle(self, epoch: int, loss: float, net: nn.Module) -> dict[str, Any]:
        """After the last epoch: restore the best weights into `net` when the last epoch
        spiked (or went NaN). Returns what was kept, for the history: `kept_epoch` and
        `kept_loss`, the epoch whose weights the fit returns and that epoch's loss."""
        spiked = not loss <= self.tolerance * self.best_loss
        if spiked and self.best_weights is not None:
            net.load_state_dict(self.best_weights)
            return {"kept_epoch": self.best_epoch, "kept_loss": self.best_loss}
        return {"kept_epoch": epoch, "kept_loss": float(loss)}

    def state(self) -> dict[str, Any]:
        """For a checkpoint (copies, so later epochs leave it as it was): `best_weights` and
        `best`, the epoch and loss they belong to."""
        weights = self.best_weights
        return {
            "best_weights": None if weights is None else {k: v.clone() for k, v in weights.items()},
            "best": {"epoch": self.best_epoch, "loss": self.best_loss},
        }

    def load(self, state: dict[str, Any]) -> None:
        if state.get("best_weights") is None:
            return  # a checkpoint from before the guard: start watching from here
        self.best_weights = state["best_weights"]
        self.best_epoch = int(state["best"]["epoch"])
        self.best_loss = float(state["best"]["loss"])
