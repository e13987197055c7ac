"""The estimator and search settings a retraining run uses, built from its few knobs.

A run exposes only seed, batch size, epochs and trials; everything else keeps ESAD's
defaults, except that the epoch budget is exact (`min_steps`/`max_steps` off), so
every search trial and the final model train for the same number of epochs and
the winner's checkpoint can serve as the final model. Kept apart from the steps
so a change of policy is a change here only.
"""

from __future__ import annotations

from ede.core.estimator import ESAD
from ede.distributed.tuning import SearchSpec


def base_estimator(*, seed: int, batch_size: int, epochs: int) -> ESAD:
    return ESAD(seed=seed, batch_size=batch_size, epochs=epochs, min_steps=None, max_steps=None)


def search_spec(*, trials: int, epochs: int, seed: int) -> SearchSpec:
    """No refit: the best trial already trained on the rows the final model would."""
    return SearchSpec(trials=trials, epochs=epochs, refit=False, seed=seed, verbose=0)
