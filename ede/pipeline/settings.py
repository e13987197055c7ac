"""The estimator and search a retraining run uses, built from its few knobs.

One training budget everywhere: with nothing set, the run trains exactly what
`ESAD()` trains, the validated step floor and cap included, so the model it ships
is the one the benchmarks measure. `epochs` (exact, the step bounds lifted) and
`batch_size` exist for quick runs and tests. The search trains its trials at the
same budget, so the best trial is the chosen configuration's model on the fit rows,
the one the final model's threshold is calibrated on.
"""

from __future__ import annotations

from ede.core.estimator import ESAD, with_epochs
from ede.distributed.tuning import SearchSpec


def base_estimator(*, seed: int, batch_size: int | None, epochs: int | None) -> ESAD:
    det = ESAD(seed=seed) if batch_size is None else ESAD(seed=seed, batch_size=batch_size)
    return with_epochs(det, epochs)


def search_spec(*, trials: int, seed: int) -> SearchSpec:
    """No refit inside the search: the flow's final model is the refit
    (`ede.pipeline.training.final_model`), with its carried threshold. The
    trials' budget is the base estimator's (`search` takes it from there)."""
    return SearchSpec(trials=trials, refit=False, seed=seed, verbose=0)
