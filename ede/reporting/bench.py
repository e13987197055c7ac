"""`ede bench odds` as pictures: ROC and precision-recall of ESAD and its peers per data set.

A table of mean AUROC hides where the methods differ (the low false-positive end is
what an operator lives in); the curves show it. They come from the scores the bench
already computed (its report's "curves": the first seed of each data set), so drawing
costs no fitting. Written beside the bench's JSON: one PNG per data set and one
self-contained page (`ede.reporting.page`: images embedded, nothing fetched).
"""

from __future__ import annotations

import html
from typing import Any

from ede.reporting import page, plots
from ede.storage import shown_url, write_bytes_atomic


def figures(report: dict[str, Any]) -> dict[str, bytes]:
    """{caption: PNG}: per data set, every method's curves on its first seed's test rows."""
    aurocs = {(r["dataset"], r["method"], r["seed"]): r["auroc"] for r in report["results"]}
    out = {}
    for dataset, drawn in (report.get("curves") or {}).items():
        seed, methods = drawn["seed"], drawn["methods"]
        shown = {m: aurocs.get((dataset, m, seed)) for m in methods}
        where = f"{dataset} (seed {seed} test rows)"
        out[f"{dataset}: ROC and precision-recall, seed {seed}"] = plots.roc_pr(
            methods, shown, where
        )
    return out


def render(report: dict[str, Any], figures_: dict[str, bytes]) -> str:
    proto = report["protocol"]
    methods = proto["methods"]
    cell = {(s["dataset"], s["method"]): s for s in report["summary"]}
    datasets = list(dict.fromkeys(s["dataset"] for s in report["summary"]))
    rows = [
        [d]
        + [
            f"{100 * cell[d, m]['auroc_mean']:.1f} ± {100 * cell[d, m]['auroc_std']:.1f}"
            for m in methods
        ]
        for d in datasets
    ]
    setup = [[k, str(proto.get(k))] for k in ("name", "seeds", "gamma_l", "gamma_p",
             "torch_threads", "machine", "scaling")]  # fmt: skip
    parts = [
        "<p>ESAD against its peers on identical disjoint splits (Deep SAD's protocol); "
        f"curves of each data set's first seed. Methods: {html.escape(', '.join(methods))}.</p>",
        "<h2>Test AUROC %, mean ± std over seeds</h2>",
        page.table(rows, ["dataset", *methods]),
        "<h2>Protocol</h2>",
        page.table(setup, ["", ""]),
    ]
    return page.document("ede bench odds", parts, figures_)


def write(report: dict[str, Any], json_url: str) -> str:
    """`<stem>.html` and `<stem>-<dataset>.png` beside the bench's JSON; the page's URL."""
    stem = json_url[: -len(".json")] if json_url.endswith(".json") else json_url
    drawn = figures(report)
    for caption, png in drawn.items():
        write_bytes_atomic(f"{stem}-{caption.split(':', 1)[0]}.png", png)
    write_bytes_atomic(f"{stem}.html", render(report, drawn).encode())
    return shown_url(f"{stem}.html")
