"""`ede bench odds`: ESAD against its peers on the ODDS tables, Deep SAD's protocol.

Every method sees the same split of every seed, in one process: the semi-supervised
training set of `ede.data.protocol` (disjoint from test), scalers fitted on training rows
only, and the test split touched once per method for AUROC/AUPRC. The first seed's test
scores also give each method's ROC and precision-recall points (`curves`, thinned), which
`ede.reporting.bench` draws: one seed's curves, as the others' differ only by the spread
the table already states.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ede.bench.peers import PEERS
from ede.core.estimator import ESAD
from ede.core.metrics import curves, evaluate
from ede.core.scaling import AffineScaler
from ede.data.protocol import SemiSupervisedSplit, semi_supervised_split

ODDS_DATASETS = ("cardio", "satellite", "satimage-2", "shuttle", "thyroid")
METHODS = (
    "esad",
    "ae_ablation",
    "deepsad_deepod",
    "iforest",
    "hgb_supervised",
    "catboost_supervised",
)
ESAD_METHODS = ("esad", "ae_ablation")  # these scale their own inputs
# The ESAD paper's AUROC (%) on these sets, for the report; thyroid is not in it.
PAPER_AUROC = {"cardio": 98.8, "satellite": 92.5, "satimage-2": 99.9, "shuttle": 99.1}
CURVE_POINTS = 200  # per curve kept in the report: enough for a plot, small in JSON


def fit_score_esad(X_train, y_train, X_test, *, seed: int, **params) -> np.ndarray:
    return ESAD(seed=seed, **params).fit(X_train, y_train).decision_function(X_test)


def fit_score_ae_ablation(X_train, y_train, X_test, *, seed: int) -> np.ndarray:
    """ESAD without its entropy and consistency terms: what the second encoder adds."""
    return fit_score_esad(
        X_train, y_train, X_test, seed=seed, lambda_entropy=0.0, lambda_consistency=0.0
    )


def _methods() -> dict[str, Callable]:
    return {"esad": fit_score_esad, "ae_ablation": fit_score_ae_ablation, **PEERS}


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as d:
        return d["X"].astype(np.float32), d["y"].astype(np.int64)


def run_odds(
    data_dir: str | Path,
    datasets=ODDS_DATASETS,
    seeds: int = 5,
    gamma_l: float = 0.05,
    gamma_p: float = 0.0,
    methods=METHODS,
    log: Callable[[str], None] = print,
) -> dict:
    check_methods(methods)
    results: list[dict] = []
    drawn: dict[str, dict] = {}  # dataset: {"seed", "methods": {method: curves}}, first seed
    for name, seed, split in protocol_splits(data_dir, datasets, seeds, gamma_l, gamma_p):
        fresh = name not in drawn
        if fresh:
            drawn[name] = {"seed": seed, "methods": {}}
        results += score_split(
            name, seed, split, methods, log, drawn[name]["methods"] if fresh else None
        )
    return {
        "protocol": protocol(datasets, seeds, gamma_l, gamma_p, methods),
        "results": results,
        "summary": summarise(results),
        "curves": drawn,
    }


def check_methods(methods) -> None:
    """Fail before any training starts, not at the first unknown name an hour in."""
    table = _methods()
    unknown = [m for m in methods if m not in table]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(table)}")


def protocol_splits(
    data_dir: str | Path, datasets, seeds: int, gamma_l: float, gamma_p: float = 0.0
) -> Iterator[tuple[str, int, SemiSupervisedSplit]]:
    """(dataset, seed, split) of the protocol, in report order. Every data set is checked
    here, at the call, so a typo fails before anything starts (the splits come lazily)."""
    data_dir = Path(data_dir)
    missing = [d for d in datasets if not (data_dir / f"{d}.npz").is_file()]
    if missing:
        raise ValueError(f"{data_dir}: no {', '.join(f'{m}.npz' for m in missing)}")
    return _splits(data_dir, list(datasets), seeds, gamma_l, gamma_p)


def _splits(data_dir: Path, datasets, seeds: int, gamma_l: float, gamma_p: float):
    for name in datasets:
        X, y = load_npz(data_dir / f"{name}.npz")
        for seed in range(seeds):
            split = semi_supervised_split(X, y, seed=seed, gamma_l=gamma_l, gamma_p=gamma_p)
            yield name, seed, split


def score_split(
    name: str,
    seed: int,
    split: SemiSupervisedSplit,
    methods,
    log: Callable[[str], None] = print,
    drawn: dict | None = None,
) -> list[dict]:
    """One result row per method on one seed's split, every method seeded the same way;
    `drawn`, when given, gets each method's test curves (`ede.core.metrics.curves`)."""
    table = _methods()
    scaler = AffineScaler().fit(split.X_train)  # train rows only
    scaled = scaler.transform(split.X_train), scaler.transform(split.X_test)
    rows = []
    for method in methods:
        torch.manual_seed(seed)
        np.random.seed(seed)
        # ESAD scales inside fit with its own `scaling`, learned on the same rows
        X_tr, X_te = (split.X_train, split.X_test) if method in ESAD_METHODS else scaled
        start = time.perf_counter()
        scores = table[method](X_tr, split.y_train, X_te, seed=seed)
        rows.append(result_row(name, method, seed, time.perf_counter() - start, split, scores))
        if drawn is not None:
            drawn[method] = curves(split.y_test, scores, max_points=CURVE_POINTS)
        log(progress_line(rows[-1], split))
    return rows


def result_row(name: str, method: str, seed: int, seconds: float, split, scores) -> dict:
    row = {"dataset": name, "method": method, "seed": seed, "fit_seconds": seconds}
    row.update(evaluate(split.y_test, scores))
    return row


def progress_line(row: dict, split: SemiSupervisedSplit) -> str:
    return (
        f"{row['dataset']:<11} seed {row['seed']} {row['method']:<19} "
        f"auroc {row['auroc']:.4f} auprc {row['auprc']:.4f} "
        f"({row['fit_seconds']:.1f} s, {split.n_labelled} labelled)"
    )


def protocol(datasets, seeds: int, gamma_l: float, gamma_p: float, methods) -> dict:
    return {
        "name": "deep-sad-disjoint",
        "train_fraction": 0.6,
        "gamma_l": gamma_l,
        "gamma_p": gamma_p,
        "seeds": seeds,
        "scaling": "peers: standardise then min-max; esad, ae_ablation: ESAD's own "
        "(default: min-max on the 1st and 99th percentiles); all fitted on training rows",
        "datasets": list(datasets),
        "methods": list(methods),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }


def summarise(results: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["dataset"], r["method"]) for r in results}, key=_order)
    for dataset, method in keys:
        rows = [r for r in results if r["dataset"] == dataset and r["method"] == method]
        auroc = np.array([r["auroc"] for r in rows])
        out.append(
            {
                "dataset": dataset,
                "method": method,
                "auroc_mean": float(auroc.mean()),
                "auroc_std": float(auroc.std()),
                "auprc_mean": float(np.mean([r["auprc"] for r in rows])),
                "fit_seconds_median": float(np.median([r["fit_seconds"] for r in rows])),
                "n_seeds": len(rows),
            }
        )
    return out


def _order(key):
    dataset, method = key
    return (dataset, METHODS.index(method) if method in METHODS else len(METHODS), method)


def markdown(report: dict, paper: dict | None = PAPER_AUROC) -> str:
    """AUROC % (mean ± std over seeds) per dataset and method, plus the mean over datasets."""
    summary = report["summary"]
    methods = [m for m in report["protocol"]["methods"]]
    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    cell = {(s["dataset"], s["method"]): s for s in summary}
    head = ["dataset", *methods] + (["ESAD paper"] if paper else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in datasets:
        row = [d] + [
            f"{100 * cell[d, m]['auroc_mean']:.1f} ± {100 * cell[d, m]['auroc_std']:.1f}"
            for m in methods
        ]
        if paper:
            row.append(f"{paper[d]:.1f}" if d in paper else "—")
        lines.append("| " + " | ".join(row) + " |")
    means = [
        f"**{100 * np.mean([cell[d, m]['auroc_mean'] for d in datasets]):.1f}**" for m in methods
    ]
    lines.append("| mean | " + " | ".join(means) + (" | |" if paper else " |"))
    fit = [
        f"{np.median([cell[d, m]['fit_seconds_median'] for d in datasets]):.1f}" for m in methods
    ]
    lines.append("| fit s (median) | " + " | ".join(fit) + (" | |" if paper else " |"))
    return "\n".join(lines)
