"""ESAD's objective: one pure function, used by training and by evaluation alike.

Per sample, with every term a mean over its dimensions (so the weights mean the
same thing for 9 features or 3072 pixels, for a latent of 8 or 64):

    rec   = mean((x_hat - target)^2)     target = x, or corrupt(x) for a labelled anomaly
    ent   = mean(z2^2)                   or 1 / (mean(z2^2) + eps) for a labelled anomaly
    cons  = mean((z1 - z2)^2)
    L     = rec + lambda_entropy * ent + lambda_consistency * cons

and the batch loss is the mean of L with labelled anomalies weighted by eta
(Deep SAD's convention). Reconstruction stands in for the mutual information
between x and z1; the latent norm of the second encoder for the entropy of the
latent code; the consistency term ties the two encoders together.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

ANOMALY_TARGETS = ("invert", "invert_clipped", "noise")


class LossTerms(NamedTuple):
    total: torch.Tensor  # scalar
    reconstruction: torch.Tensor  # scalar, batch mean of the (possibly inverted) term
    entropy: torch.Tensor  # scalar
    consistency: torch.Tensor  # scalar


def corrupt(x: torch.Tensor, kind: str = "invert", generator: torch.Generator | None = None):
    """The target a labelled anomaly is pushed to reconstruct instead of itself.

    "invert" is 1 - x: on min-max scaled data it is the farthest point of the unit
    box from x (with the default percentile min-max, the box that holds the bulk of
    every feature), deterministic and free. "invert_clipped" inverts x clipped to the
    box, so a row outside it gets a target on the box, not as far outside on the other
    side. "noise" is uniform noise in [0, 1). Validation kept "invert" (round 11 of
    benchmarks/select_defaults.py).
    """
    if kind == "invert":
        return 1.0 - x
    if kind == "invert_clipped":
        return 1.0 - x.clamp(0.0, 1.0)
    if kind == "noise":
        return torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    raise ValueError(f"anomaly_target must be one of {ANOMALY_TARGETS}, got {kind!r}")


def per_sample_terms(x, x_hat, z1, z2):
    """The three un-inverted per-sample terms, shape (n,) each; also the raw score parts."""
    rec = (x_hat - x).pow(2).flatten(1).mean(1)
    ent = z2.pow(2).mean(1)
    cons = (z1 - z2).pow(2).mean(1)
    return rec, ent, cons


def esad_objective(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    y: torch.Tensor,
    *,
    lambda_entropy: float,
    lambda_consistency: float,
    eta: float = 1.0,
    anomaly_target: str = "invert",
    eps: float = 1e-6,
    generator: torch.Generator | None = None,
) -> LossTerms:
    labelled = y.bool()
    target = torch.where(_rows(labelled, x), corrupt(x, anomaly_target, generator), x)
    rec, ent, cons = per_sample_terms(target, x_hat, z1, z2)
    ent = torch.where(labelled, 1.0 / (ent + eps), ent)
    per_sample = rec + lambda_entropy * ent + lambda_consistency * cons
    weight = torch.where(labelled, torch.as_tensor(eta, dtype=x.dtype), torch.ones_like(rec))
    return LossTerms(
        total=(weight * per_sample).mean(),
        reconstruction=rec.mean(),
        entropy=ent.mean(),
        consistency=cons.mean(),
    )


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))
