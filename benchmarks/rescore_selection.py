"""Which score terms to add, judged on validation splits only (round 10).

One fit of ESAD's defaults per dataset, seed and label ratio, then each candidate
score computed from the same network: reconstruction alone, the latent norm alone,
the shipped sum of both, and the sum with the consistency term |z1 - z2|^2 added.
Each term is divided by its mean over the unlabelled fitting rows, as `fit` does: the
fitted model's own scales for rec and ent, the same rule for cons.

    python benchmarks/rescore_selection.py --data-dir ../shared/data/odds --gamma-l 0.01 \
        --seeds 10 11 12 13 14 15 16 17 18 19 > rescore-001.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from select_defaults import add_split_arguments, validation_splits

from ede import ESAD
from ede.core.metrics import evaluate
from ede.core.objective import per_sample_terms

SCORES = {
    "rec": ("rec",),
    "ent": ("ent",),
    "rec+ent": ("rec", "ent"),  # the shipped score
    "rec+ent+cons": ("rec", "ent", "cons"),
}


@torch.no_grad()
def terms(det: ESAD, X: np.ndarray) -> dict[str, np.ndarray]:
    det.net_.eval()
    x = torch.as_tensor(det.scaler_.transform(X), dtype=torch.float32)
    rec, ent, cons = per_sample_terms(x, *det.net_(x))
    return {"rec": rec.numpy(), "ent": ent.numpy(), "cons": cons.numpy()}


def main() -> None:
    p = argparse.ArgumentParser()
    add_split_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name, seed, X_fit, y_fit, X_val, y_val in validation_splits(args):
        det = ESAD(seed=seed).fit(X_fit, y_fit)
        val_terms = terms(det, X_val)
        s_rec, s_ent = det.net_.score_scale.tolist()
        scale = {"rec": s_rec, "ent": s_ent}
        scale["cons"] = float(terms(det, X_fit)["cons"][y_fit == 0].mean())
        for cand, parts in SCORES.items():
            score = sum(val_terms[k] / scale[k] for k in parts)
            row = {"dataset": name, "seed": seed, "candidate": f"score_{cand}"}
            row.update(gamma_l=args.gamma_l, **evaluate(y_val, score))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
