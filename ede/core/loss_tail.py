"""A fit's loss curve, cut to what shows a spike: its last epochs, its lowest epoch, and
the epoch whose weights the fit returned (`ede.core.loss_guard`). Plain Python, so the
report and the CLI read it without torch."""

from __future__ import annotations

from typing import Any


def loss_tail(history: list[dict[str, Any]], epochs: int = 10) -> dict[str, Any]:
    """A fit's last `epochs` epoch losses, its lowest, and the epoch whose weights it
    returned: what `ede train` prints and a run's report shows, so a spike is visible."""
    points = [(int(h["epoch"]), float(h["loss"])) for h in history if "loss" in h]
    if not points:
        return {}
    min_epoch, min_loss = min(points, key=lambda p: p[1])
    last = history[-1]
    return {
        "epochs": [e for e, _ in points[-epochs:]],
        "losses": [v for _, v in points[-epochs:]],
        "min_epoch": min_epoch,
        "min_loss": min_loss,
        "kept_epoch": int(last.get("kept_epoch", points[-1][0])),
        "kept_loss": float(last.get("kept_loss", points[-1][1])),
    }


def loss_tail_line(tail: dict[str, Any]) -> str:
    """`loss_tail` in one line."""
    if not tail:
        return "training loss: not recorded"
    losses = " ".join(f"{v:.4g}" for v in tail["losses"])
    line = (
        f"training loss, epochs {tail['epochs'][0]}-{tail['epochs'][-1]}: {losses}; "
        f"lowest {tail['min_loss']:.4g} at epoch {tail['min_epoch']}"
    )
    if tail["kept_epoch"] != tail["epochs"][-1]:
        last, kept = tail["losses"][-1], tail["kept_loss"]
        spike = f"{last / kept:.3g}x" if kept > 0 else f"{last:.4g}"
        line += f"; kept epoch {tail['kept_epoch']}'s weights (the last epoch's loss: {spike})"
    return line
