"""The estimator and search a retraining run uses, built from its few knobs.

One training budget everywhere: with nothing set, the run trains exactly what
`ESAD()` trains, the validated step floor and cap included, so the model it ships
is the one the benchmarks measure. `epochs` (exact, the step bounds lifted) and
`batch_size` exist for quick runs and tests. The search trains its trials at the
same budget, so the best trial is the chosen configuration's model on the fit rows,
the one the final model's threshold is calibrated on.

The knobs travel as a `Budget`, and the estimator is built from it where it trains
(a Ray task, `ede.pipeline.steps`): the flow's process never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ede.core.estimator import ESAD
    from ede.distributed.tuning import SearchSpec


@dataclass(frozen=True)
class Budget:
    seed: int = 0
    batch_size: int | None = None
    epochs: int | None = None

    def estimator(self) -> ESAD:
        from ede.core.estimator import ESAD, with_epochs

        extra = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return with_epochs(ESAD(seed=self.seed, **extra), self.epochs)


def base_estimator(*, seed: int, batch_size: int | None, epochs: int | None) -> ESAD:
    return Budget(seed, batch_size, epochs).estimator()


def search_spec(*, trials: int, seed: int) -> SearchSpec:
    """No refit inside the search: the flow's final model is the refit
    (`ede.pipeline.training.final_model`), with its carried threshold. The
    trials' budget is the base estimator's (`search` takes it from there)."""
    from ede.distributed.tuning import SearchSpec

    return SearchSpec(trials=trials, refit=False, seed=seed, verbose=0)
