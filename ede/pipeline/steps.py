"""The retraining run's steps, each one Ray task: the flow's process holds no table, no model.

The process that runs the flow (a Prefect worker, often a small node) only
orchestrates: every step that reads the table or holds a network runs in a Ray task
(`ede.distributed.remote.call`), so that process's memory stays what Prefect and
Ray's client take, whatever the table's size, and it never imports torch or
onnxruntime. That is why each task's imports live in its body: this module is
imported by the flow, a body runs only on a Ray worker. What comes back is small:
the splits' manifest, a search's summary, a model folder's URL and threshold,
metrics.

A step that starts Ray work of its own holds no CPU itself (the search's trials and
a multi-worker training get the cluster); a training on one worker trains inside its
step's task, which holds that worker's CPUs or GPU, as a one-worker Tune trial
trains inside its trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ede.data.ingest import prepare_splits
from ede.distributed.remote import call

if TYPE_CHECKING:
    from ede.data.ingest import PreparedSplits, SplitSettings
    from ede.data.late_labels import LabelJoin
    from ede.data.window import DataWindow
    from ede.distributed.cluster import Scaling
    from ede.distributed.tuning_results import SearchSummary
    from ede.pipeline.layout import RunLayout
    from ede.pipeline.settings import Budget


@dataclass(frozen=True)
class TrainedModel:
    """A written model folder, as the flow needs it: where, and its threshold. Plain
    fields only: unpickling a library object in the flow's process would import its
    module, and with it what the step keeps out (scikit-learn for a `Calibration`)."""

    out: str
    final_val_auroc: float
    threshold: float
    history: list = field(default_factory=list)  # per epoch, of the model that held rows out
    loss_tail: dict = field(default_factory=dict)  # the shipped model's (ede.core.loss_tail)


def ingest(
    data_url: str,
    storage_url: str,
    split: SplitSettings,
    window: DataWindow | None = None,
    join: LabelJoin | None = None,
) -> PreparedSplits:
    """`ede.data.ingest.prepare_splits`: a whole-table pass, hence a task. (ede.data
    imports no torch, so the function itself is the task's body.)"""
    return call(prepare_splits, data_url, storage_url, split, window, join)


def search(
    prepared: PreparedSplits, layout: RunLayout, budget: Budget, trials: int, scaling: Scaling
) -> SearchSummary:
    """Ray Tune over the loss weights; its driver is this task, its trials Tune's actors."""
    return call(_search, prepared, layout, budget, trials, scaling, num_cpus=0)


def train(
    prepared: PreparedSplits,
    layout: RunLayout,
    budget: Budget,
    scaling: Scaling,
    target_fpr: float,
    outcome: SearchSummary | None,
    refit: bool,
) -> TrainedModel:
    """`ede.pipeline.training.final_model`; one worker trains in this task."""
    here = scaling.workers == 1
    resources = (
        {"num_cpus": scaling.cpus_per_worker, "num_gpus": 1 if scaling.use_gpu else 0}
        if here
        else {"num_cpus": 0}
    )
    args = (prepared, layout, budget, scaling, target_fpr, outcome, refit, here)
    return call(_train, *args, **resources)


def export(model_url: str, artifact_url: str, quantize: str | None) -> dict[str, Any]:
    """`ede.export.exporter.export_folder`: the artifact's metadata."""
    return call(_export, model_url, artifact_url, quantize)


def evaluate(
    artifact_url: str, prepared: PreparedSplits, champion: dict[str, Any] | None
) -> dict[str, Any]:
    """`ede.pipeline.evaluation.compare_on_test`: candidate and champion on the test rows."""
    return call(_evaluate, artifact_url, prepared, champion)


# ----------------------------------------------------------------- the tasks' bodies


def _search(prepared, layout, budget, trials, scaling):
    from ede.pipeline import settings, training

    spec = settings.search_spec(trials=trials, seed=budget.seed)
    outcome = training.search_weights(prepared, layout, budget.estimator(), spec, scaling)
    return outcome.summary()


def _train(prepared, layout, budget, scaling, target_fpr, outcome, refit, here):
    from ede.core.loss_tail import loss_tail
    from ede.pipeline import training

    trained = training.final_model(
        prepared,
        layout,
        budget.estimator(),
        scaling,
        target_fpr,
        outcome,
        refit,
        in_this_task=here,
    )
    history = [dict(h) for h in (trained.selected or trained.det).history_]
    threshold = float(trained.calibration.threshold)
    tail = loss_tail(trained.det.history_)
    return TrainedModel(trained.out, trained.final_val_auroc, threshold, history, tail)


def _export(model_url, artifact_url, quantize):
    from ede.export.exporter import export_folder

    return export_folder(model_url, artifact_url, quantize=quantize)


def _evaluate(artifact_url, prepared, champion):
    from ede.pipeline.evaluation import compare_on_test

    return compare_on_test(artifact_url, prepared, champion)
