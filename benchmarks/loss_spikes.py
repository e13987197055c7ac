"""Does a fit end on a loss spike? ESAD's last-epoch training loss against its run's minimum.

For the protocol of `ede bench odds` (Deep SAD's split, `ede.data.protocol`), every fit
`ESAD(seed=seed, **params).fit(X_train, y_train)` is summarised by its epoch losses:
the last epoch's loss over the run's minimum (`last_over_min`), the largest jump within
the last ten epochs, and, where the fit's guard kept an earlier epoch's weights, the loss
of the weights it returned (`returned_over_min`). `--validation` fits on the protocol's
training rows less a stratified quarter and scores that quarter (how a fix is chosen);
without it, the test split gives the AUROC the issue quotes.

    python benchmarks/loss_spikes.py --data-dir ../shared/data/odds --gamma-l 0.01 \
        --seeds 0 1 2 3 4 5 6 7 8 9 --json spikes-0.01.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ede import ESAD
from ede.bench.odds import ODDS_DATASETS, load_npz
from ede.core.loss_tail import loss_tail
from ede.core.metrics import evaluate
from ede.data.protocol import semi_supervised_split, validation_split


def spike_summary(history: list[dict]) -> dict:
    """The fit's loss curve reduced to the figures the issue counts; which weights the fit
    returned is `ede.core.loss_tail`'s reading of the history, as `ede train` prints it."""
    tail = loss_tail(history, epochs=10)
    best = tail["min_loss"]
    return {
        "epochs": len(history),
        "min_loss": best,
        "last_loss": tail["losses"][-1],
        "last_over_min": tail["losses"][-1] / best,
        "tail_peak_over_min": max(tail["losses"]) / best,
        "returned_over_min": tail["kept_loss"] / best,
        "kept_epoch": tail["kept_epoch"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--gamma-l", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--datasets", nargs="+", default=list(ODDS_DATASETS))
    p.add_argument("--params", default="{}", help="JSON of ESAD parameters to change")
    p.add_argument("--validation", action="store_true", help="score a carved validation split")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    params = json.loads(args.params)
    rows = []
    for name in args.datasets:
        X, y = load_npz(f"{args.data_dir}/{name}.npz")
        for seed in args.seeds:
            split = semi_supervised_split(X, y, seed=seed, gamma_l=args.gamma_l)
            X_fit, y_fit, X_eval, y_eval = split.X_train, split.y_train, split.X_test, split.y_test
            if args.validation:
                X_fit, y_fit, X_eval, y_eval = validation_split(
                    split.X_train, split.y_train, fraction=0.25, seed=seed
                )
            t = time.perf_counter()
            det = ESAD(seed=seed, **params).fit(X_fit, y_fit)
            row = {"dataset": name, "seed": seed, "gamma_l": args.gamma_l, "params": params}
            row["fit_seconds"] = time.perf_counter() - t
            row["split"] = "validation" if args.validation else "test"
            row.update(evaluate(y_eval, det.decision_function(X_eval)))
            row.update(spike_summary(det.history_))
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    ratios = np.array([r["returned_over_min"] for r in rows])
    print(
        f"fits {len(rows)}: last epoch > 1.2x min {sum(r['last_over_min'] > 1.2 for r in rows)}, "
        f"returned > 1.2x min {int((ratios > 1.2).sum())}, "
        f"mean auroc {np.mean([r['auroc'] for r in rows]):.4f}"
    )


if __name__ == "__main__":
    main()
