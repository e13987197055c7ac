"""How much ESAD's test AUROC moves when only the order of its training rows changes.

The retraining flow's table holds a split's training rows in another order than the
in-process benchmark passes them (ingest shuffles them), so its mini-batches differ;
this measures that noise floor on the protocol's own splits, in process, one thread:
for each seed, `ESAD(seed=s).fit` on the rows as given and on two seeded permutations.

    .venv/bin/python benchmarks/row_order_noise.py --data-dir ../shared/data/odds \
        --dataset satellite --gamma-l 0.01
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ede.bench import odds
from ede.core.estimator import ESAD
from ede.core.metrics import evaluate


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", default="satellite")
    p.add_argument("--gamma-l", type=float, default=0.01)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--orders", type=int, nargs="+", default=[1, 2], help="permutation seeds")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    columns: list[list[float]] = []
    for _, seed, split in odds.protocol_splits(
        args.data_dir, [args.dataset], args.seeds, args.gamma_l
    ):
        row = []
        for order in [None, *args.orders]:
            X, y = split.X_train, split.y_train
            if order is not None:
                perm = np.random.default_rng(order).permutation(len(X))
                X, y = X[perm], y[perm]
            score = ESAD(seed=seed).fit(X, y).decision_function(split.X_test)
            row.append(100 * evaluate(split.y_test, score)["auroc"])
        columns.append(row)
        print(f"{args.dataset} seed {seed}: " + " ".join(f"{v:.2f}" for v in row), flush=True)
    means = np.mean(columns, axis=0)
    names = ["as given", *(f"order {o}" for o in args.orders)]
    print("mean AUROC: " + ", ".join(f"{n} {m:.2f}" for n, m in zip(names, means, strict=True)))


if __name__ == "__main__":
    main()
