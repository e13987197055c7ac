"""One self-contained HTML page per run (and per benchmark, through `document`): the
figures embedded, nothing fetched.

A report is opened months later, from object storage, on a laptop without network
or behind a proxy: so every image is a data: URI, the style sheet is inline, and
there is no script. What it shows, top to bottom: the decision and its reason, the
metrics against the champion, the data (source, fingerprint, rows, window), the
configuration and the search, then the figures.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from ede.core.loss_tail import loss_tail_line

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f4f4f4; text-align: left; }
.promoted { color: #1a7f37; } .kept { color: #9a6700; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; } code { background: #f6f8fa; }
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape("n/a" if v is None else str(v))


def table(rows: list[list[Any]], head: list[str]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def _json(v: Any) -> str | None:
    return None if v is None else json.dumps(v)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def document(title: str, parts: list[str], figures: dict[str, bytes]) -> str:
    """A whole page: `title`, the HTML `parts` in order, then each figure under its caption."""
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *parts,
        "<h2>Figures</h2>",
    ]
    out += [
        f"<h3>{html.escape(caption)}</h3>{_img(png, caption)}" for caption, png in figures.items()
    ]
    return "\n".join(out + ["</body></html>"])


def training_section(tail: dict[str, Any]) -> str:
    """The shipped model's last epoch losses and the weights its fit kept: a loss spike at
    the end of training shows here (`ede.core.loss_guard`)."""
    if not tail:
        return "<p>training loss: not recorded</p>"
    rows = [[e, v] for e, v in zip(tail["epochs"], tail["losses"], strict=True)]
    return f"<p>{html.escape(loss_tail_line(tail))}</p>" + table(rows, ["epoch", "loss"])


def render(report: dict[str, Any], figures: dict[str, bytes], title: str) -> str:
    """The page for a run's `report` (report.json) and its `figures` ({caption: PNG})."""
    decision = report.get("decision") or {}
    metrics = report.get("metrics") or {}
    new, old = metrics.get("candidate") or {}, metrics.get("champion") or {}
    data, search = report.get("data") or {}, report.get("search")
    verdict = "promoted" if decision.get("promote") else "kept the champion"
    rows = [
        [key, new.get(key), old.get(key)]
        for key in (
            "auroc",
            "auprc",
            "rows",
            "labelled_anomalies",
            "flagged",
            "recall_at_threshold",
            "fpr_at_threshold",
        )  # fmt: skip
    ]
    parts = [
        f"<p class='{'promoted' if decision.get('promote') else 'kept'}'><b>Decision:</b> "
        f"{verdict}: {html.escape(str(decision.get('reason', 'n/a')))}</p>",
        "<h2>Test metrics, on the same rows</h2>",
        table(rows, ["metric", "candidate", "champion (before this run)"]),
        "<h2>Data</h2>",
        table(
            [
                ["source", data.get("source")],
                ["sha256", data.get("sha256")],
                ["rows", _json(data.get("rows"))],
                ["labelled anomalies", _json(data.get("labelled"))],
                ["window", _json(data.get("window"))],
                ["partitions", ", ".join(data.get("partitions") or []) or None],
                ["late labels", _json(data.get("late_labels"))],
            ],
            ["", ""],
        ),
        "<h2>Training</h2>",
        training_section((report.get("training") or {}).get("loss_tail") or {}),
        "<h2>Configuration and search</h2>",
        table(
            [
                ["best parameters", _json(report.get("best_params") or None) or "defaults"],
                ["threshold", report.get("threshold")],
                ["trials", None if not search else search.get("trials")],
                ["best trial", None if not search else search.get("best_trial")],
                ["best validation AUROC", None if not search else search.get("best_val_auroc")],
                ["search seconds", None if not search else search.get("seconds")],
                ["run folder", report.get("run_url")],
            ],
            ["", ""],
        ),
    ]
    return document(title, parts, figures)
