"""Mean validation AUROC per candidate, dataset and label ratio, from select_defaults runs.

python benchmarks/summarise_selection.py benchmarks/results/selection.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    # a seed run again (round 8 repeated round 7's shipped seeds) is the same fit,
    # bit for bit, so it counts once
    once = {(r["candidate"], r["gamma_l"], r["dataset"], r["seed"]): r for r in rows}
    rows = list(once.values())
    by = defaultdict(list)
    for r in rows:
        by[r["candidate"], r["gamma_l"], r["dataset"]].append(r["auroc"])
    datasets = sorted({r["dataset"] for r in rows})
    for gamma in sorted({r["gamma_l"] for r in rows}, reverse=True):
        print(f"\ngamma_l {gamma}: validation AUROC, mean over seeds")
        print(f"| candidate | {' | '.join(datasets)} | mean |")
        print("|---" * (len(datasets) + 2) + "|")
        for cand in sorted({r["candidate"] for r in rows}):
            cells = [np.mean(by[cand, gamma, d]) if by[cand, gamma, d] else None for d in datasets]
            done = [c for c in cells if c is not None]
            mean = f"{np.mean(done):.4f}" if len(done) == len(datasets) else "—"
            shown = " | ".join("—" if c is None else f"{c:.4f}" for c in cells)
            print(f"| {cand} | {shown} | {mean} |")


if __name__ == "__main__":
    main(sys.argv[1])
