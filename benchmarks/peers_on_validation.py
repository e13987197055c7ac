"""The peers on the selection's validation splits, beside ESAD's candidates.

Is a gap on the benchmark's five test seeds (thyroid at 1% labels) a property of the
method or of those seeds? Ten validation seeds of the same protocol answer without
reading a test split: the peers get exactly the rows the candidates got, scaled as
in `ede bench odds`. Rows go to the same JSONL as `select_defaults.py`, as candidate
"peer:<name>".

    python benchmarks/peers_on_validation.py --data-dir ../shared/data/odds --gamma-l 0.01 \
        --seeds 10 11 12 13 14 15 16 17 18 19 > peers-001.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from select_defaults import add_split_arguments, validation_splits

from ede.bench.peers import PEERS
from ede.core.metrics import evaluate
from ede.core.scaling import AffineScaler


def main() -> None:
    p = argparse.ArgumentParser()
    add_split_arguments(p)
    p.add_argument("--peers", nargs="+", default=list(PEERS))
    args = p.parse_args()
    torch.set_num_threads(1)
    for name, seed, X_fit, y_fit, X_val, y_val in validation_splits(args):
        scaler = AffineScaler().fit(X_fit)
        X_fit, X_val = scaler.transform(X_fit), scaler.transform(X_val)
        for peer in args.peers:
            torch.manual_seed(seed)
            np.random.seed(seed)
            scores = PEERS[peer](X_fit, y_fit, X_val, seed=seed)
            row = {"dataset": name, "seed": seed, "candidate": f"peer:{peer}"}
            row.update(gamma_l=args.gamma_l, **evaluate(y_val, scores))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
