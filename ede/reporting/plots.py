"""The run's figures, as PNG bytes, from the plain data a run stores (report.json).

Each figure answers one question a reviewer asks before shipping a model: does it
rank anomalies better than the champion (ROC, precision-recall), where does the
threshold cut (score histograms), did training converge (losses and validation
AUROC per epoch), did the search find a better region than the defaults (the
tuning landscape), and, for images, what the model finds odd (a grid of the most and
least anomalous test images). A scoring run's trend (PSI per run) and the benchmark's
curves (ESAD against its peers) are drawn here too. matplotlib's Agg backend, so no
display is needed.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

DPI = 110
COLOURS = {"candidate": "#1f77b4", "champion": "#ff7f0e"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def roc_pr(
    curves: dict[str, dict | None], aurocs: dict[str, float | None], where: str = "the test rows"
) -> bytes:
    """ROC and precision-recall of several models on the same rows (`where`): a run's
    candidate and champion, or the benchmark's methods on one data set."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, c in curves.items():
        if not c:
            continue
        auc = aurocs.get(name)
        label = f"{name}" + (f" (AUROC {auc:.3f})" if auc is not None else "")
        roc.plot(c["roc"]["fpr"], c["roc"]["tpr"], color=COLOURS.get(name), label=label)
        pr.plot(c["pr"]["recall"], c["pr"]["precision"], color=COLOURS.get(name), label=name)
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    roc.set(title=f"ROC on {where}", xlabel="false-positive rate", ylabel="true-positive rate")
    pr.set(title=f"Precision-recall on {where}", xlabel="recall", ylabel="precision")
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "lower left")
    return _png(fig)


def score_histogram(hist: dict[str, list], threshold: float) -> bytes:
    """Normal and anomalous test rows' scores, the calibrated threshold drawn."""
    edges = hist["edges"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, colour in (("normal", "#2ca02c"), ("anomaly", "#d62728")):
        counts = hist[key]
        total = max(sum(counts), 1)
        share = [n / total for n in counts]
        ax.bar(edges[:-1], share, width=widths, align="edge", alpha=0.55, color=colour,
               label=f"{key} rows ({sum(counts)})")  # fmt: skip
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(title="Candidate's scores on the test rows", xlabel="anomaly score",
           ylabel="share of rows of its kind")  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def training_curves(history: list[dict[str, Any]]) -> bytes:
    """The loss and its three terms and validation AUROC per reported epoch; the epoch
    whose weights the fit kept is marked when the loss guard kept an earlier one."""
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    fig, (losses, val) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "reconstruction", "entropy", "consistency"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            losses.plot(epochs, values, marker=".", label=key)
    kept = history[-1].get("kept_epoch") if history else None
    if kept is not None and kept != epochs[-1]:
        losses.axvline(kept, color="black", linestyle="--", label=f"kept epoch {kept}")
    losses.set(title="Loss terms per epoch", xlabel="epoch", ylabel="mean over the epoch")
    losses.set_yscale("symlog", linthresh=1e-3)
    losses.legend()
    aurocs = [h.get("val_auroc") for h in history]
    if any(a is not None for a in aurocs):
        val.plot(epochs, aurocs, marker=".", color="#9467bd", label="validation AUROC")
        val.legend(loc="lower right")
    val.set(title="Validation AUROC per epoch", xlabel="epoch", ylabel="AUROC")
    for ax in (losses, val):
        ax.grid(alpha=0.3)
    return _png(fig)


def tuning_landscape(trials: list[dict[str, Any]], best_trial: str | None) -> bytes:
    """Trials in the lambda_entropy x lambda_consistency plane (log axes), coloured by
    final validation AUROC; stopped or failed trials hollow; the winner and the
    defaults labelled."""
    fig, ax = plt.subplots(figsize=(7, 5))
    done = [t for t in trials if t.get("final_val_auroc") is not None]
    rest = [t for t in trials if t.get("final_val_auroc") is None]
    if done:
        points = ax.scatter(
            [t["lambda_entropy"] for t in done],
            [t["lambda_consistency"] for t in done],
            c=[t["final_val_auroc"] for t in done],
            cmap="viridis",
            s=80,
            edgecolors="black",
        )
        fig.colorbar(points, ax=ax, label="final validation AUROC")
    if rest:
        xs, ys = [t["lambda_entropy"] for t in rest], [t["lambda_consistency"] for t in rest]
        ax.scatter(xs, ys, facecolors="none", edgecolors="grey", s=80, label="stopped or failed")
    for t in trials:
        winner = bool(t.get("best")) or t.get("trial_id") == best_trial
        tags = [n for n, hit in (("winner", winner), ("defaults", bool(t.get("defaults")))) if hit]
        if tags:
            ax.annotate(" + ".join(tags), (t["lambda_entropy"], t["lambda_consistency"]),
                        textcoords="offset points", xytext=(8, 6))  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(title="Tuning landscape", xlabel="lambda_entropy", ylabel="lambda_consistency")
    if rest:
        ax.legend(loc="best")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def drift_trend(runs: list[dict[str, Any]], threshold: float) -> bytes:
    """A prefix's last scoring runs, oldest left: PSI against the model's validation scores
    with the retrain threshold drawn, and the score quantiles (median, 5-95 %)."""
    x = list(range(len(runs)))
    labels = [str(r.get("time", i))[:16].replace("T", "\n") for i, r in enumerate(runs)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    values = [r["value"] for r in runs]
    top.plot(x, values, color="#1f77b4", marker="o", label="PSI of the run")
    hot = [i for i, r in enumerate(runs) if r.get("drifted")]
    if hot:
        top.scatter(hot, [values[i] for i in hot], color="#d62728", s=70, zorder=3,
                    label="drifted: retrain")  # fmt: skip
    top.axhline(threshold, color="#d62728", linestyle="--", label=f"threshold {threshold:g}")
    top.set(title="Score drift per scoring run", ylabel="PSI vs validation scores")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left")
    q = [r.get("quantiles") or {} for r in runs]
    if all("p50" in v for v in q):
        bottom.fill_between(x, [v["p5"] for v in q], [v["p95"] for v in q], color="#2ca02c",
                            alpha=0.25, label="5-95 % of scores")  # fmt: skip
        bottom.plot(x, [v["p50"] for v in q], color="#2ca02c", marker=".", label="median score")
        bottom.legend(loc="upper left")
    bottom.set(ylabel="anomaly score", xlabel="run (UTC)")
    step = max(1, len(x) // 10)  # at most ten labels, however many runs
    bottom.set_xticks(x[::step], labels[::step], fontsize=7)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _png(fig)


def image_grid(extremes: dict[str, Any]) -> bytes:
    """The test images the model scores most anomalous (top row) and least (bottom row),
    each titled with its score and framed by its label: red a labelled anomaly, blue not."""
    shape = extremes["shape"]  # (channels, height, width)
    rows = [("most anomalous", extremes["most"]), ("least anomalous", extremes["least"])]
    cols = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(2, cols, figsize=(1.6 * cols, 4.2), squeeze=False)
    for r, (name, items) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(items):
                ax.axis("off")
                continue
            item = items[c]
            image = np.asarray(item["pixels"], dtype=np.float64).reshape(shape)
            lo, hi = image.min(), image.max()
            image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
            if shape[0] == 3:
                ax.imshow(image.transpose(1, 2, 0))
            else:
                ax.imshow(image[0], cmap="gray")
            colour = "#d62728" if item["label"] == 1 else "#1f77b4"
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=3)
            ax.set_title(f"{item['score']:.3g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(name)
    fig.suptitle("Test images by anomaly score (frame: red = labelled anomaly, blue = not)")
    return _png(fig)
