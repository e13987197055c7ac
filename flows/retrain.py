"""Scheduled retraining: data in object storage -> search -> train -> export -> promote.

Each task is one ede library step and carries the retry policy that step
deserves; the flow only composes them and publishes what the library
renders. Storage layout: `ede.pipeline.layout`. Nothing reaches `models/` until
every step before `promote` has succeeded, so a failed run publishes nothing.
RAY_ADDRESS joins a Ray cluster, else Ray starts locally once for the run, and
every step runs there (`ede.pipeline.steps`); with EDE_RAY_SUBMIT=jobs and
RAY_JOBS_ADDRESS (or `ray_jobs_address`) the search and training run as one Ray job
submitted through the Jobs API (`ede.pipeline.training_job`), which survives this
process's connection and is stopped if this run is cancelled.
AWS_* / AWS_ENDPOINT_URL point s3:// at S3 or MinIO.
"""

from __future__ import annotations

import time
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from ede.data.ingest import SplitSettings, check_sources
from ede.data.late_labels import LabelJoin
from ede.data.window import DataWindow
from ede.distributed import cluster, jobs
from ede.export import registry
from ede.pipeline import steps, training_job
from ede.pipeline.layout import RunLayout
from ede.pipeline.markdown import (
    model_line,
    prepared_line,
    retrain_markdown,
    search_line,
    tuning_rows,
)
from ede.pipeline.report import run_report, run_summary
from ede.pipeline.settings import Budget
from ede.reporting.run import write as write_report
from ede.storage import absolute, shown_url
from flows.console import failure_line, quiet_tracebacks
from flows.io_retries import STORAGE_RETRIES
from flows.params import Fraction, ModelName, PositiveInt

quiet_tracebacks()  # a failed run: one console line, tracebacks in the debug log

# Each task is one library step, run on Ray (ede.pipeline.steps: this process holds no
# table and no model); storage tasks retry transient errors (flows.io_retries).
check = task(check_sources, name="check", cache_policy=NO_CACHE, **STORAGE_RETRIES)
ingest = task(steps.ingest, name="ingest", cache_policy=NO_CACHE, **STORAGE_RETRIES)
search_weights = task(steps.search, name="search", cache_policy=NO_CACHE)
train = task(steps.train, name="train", cache_policy=NO_CACHE)
export = task(steps.export, name="export", cache_policy=NO_CACHE, **STORAGE_RETRIES)
evaluate = task(steps.evaluate, name="evaluate", cache_policy=NO_CACHE, **STORAGE_RETRIES)
promote = task(registry.promote, name="promote", cache_policy=NO_CACHE, **STORAGE_RETRIES)


@task(name="search-and-train (Ray job)", cache_policy=NO_CACHE)
def train_job(address: str, run: training_job.TrainingRun) -> tuple:
    """`ede.pipeline.training_job.run_as_job`, the job's logs in this run's log."""
    return training_job.run_as_job(address, run, log=get_run_logger().info)


report_page = task(write_report, name="report", cache_policy=NO_CACHE, **STORAGE_RETRIES)
# The champion's pointer moves by compare-and-swap (ede.export.registry): a run that lost a
# race compares again with the new champion on its own test rows, a few times at most.
PROMOTE_ATTEMPTS = 3


@flow(name="ede-retrain", on_failure=[failure_line], on_crashed=[failure_line])
def retrain(
    data_url: str,
    storage_url: str,
    name: ModelName = "ede",
    label_column: str = "label",
    trials: Annotated[int, Field(ge=0, le=1000)] = 4,
    epochs: Annotated[int, Field(ge=1, le=10_000)] | None = None,
    batch_size: PositiveInt | None = None,
    workers: PositiveInt = 1,
    use_gpu: bool = False,
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0,
    test_fraction: Fraction = 0.25,
    validation_fraction: Fraction = 0.2,
    target_fpr: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.01,
    min_rows: Annotated[int, Field(ge=2)] = 50,
    quantize_int8: bool = True,
    refit: bool = True,
    allow_schema_change: bool = False,
    since: str | None = None,
    last_n_days: Annotated[int, Field(ge=1)] | None = None,
    labels_url: str | None = None,
    id_column: str | None = None,
    seed: int = 0,
    ray_jobs_address: str | None = None,
) -> dict:
    """Retrain `name` on the table(s) at `data_url`; promote the result if it is at least as
    good as the champion on the same test rows. `trials=0` skips the search (defaults).
    `epochs` and `batch_size` default to ESAD's validated budget (for quick runs only).
    `refit` ships the chosen configuration fitted on every training row (validation rows
    too), its threshold carried from the model that held them out. A model whose features
    differ from the champion's is published but not promoted unless `allow_schema_change`.
    `since` (YYYY-MM-DD) and `last_n_days` train on the `date=YYYY-MM-DD/` partitions of
    `data_url` inside that window only (`ede.data.window`). `labels_url`: a table of
    (`id_column`, `label_column`) whose labels, arriving later, replace the rows' own where
    an id matches (`ede.data.late_labels`). `ray_jobs_address` (http://HOST:8265, else
    EDE_RAY_SUBMIT=jobs with RAY_JOBS_ADDRESS) runs the search and training as a Ray job.
    """
    data_url, storage_url = absolute(data_url), absolute(storage_url)  # the steps run on Ray
    layout = RunLayout.new(storage_url)
    scaling = cluster.Scaling(workers, use_gpu, cpus_per_worker)
    address = jobs.jobs_address(ray_jobs_address)
    scaling.check(on_cluster=address is not None)
    split = SplitSettings(label_column, test_fraction, validation_fraction, seed, min_rows)
    window = DataWindow(since=since, last_n_days=last_n_days)
    if (labels_url is None) != (id_column is None):
        raise ValueError("labels_url and id_column go together: the labels join by that id")
    join = LabelJoin(absolute(labels_url), id_column) if labels_url else None
    seen = registry.champion_view(layout.models_url, name)
    started = time.perf_counter()
    log = get_run_logger()
    check(data_url, split, window, join)  # schemas only, before Ray: bad input fails in a second
    with cluster.ray_session(train_v2=scaling.workers > 1 and address is None):
        if address is None:  # else the job checks its own cluster
            scaling.check_cluster()
        prepared = ingest(data_url, layout.storage, split, window, join)
        log.info(prepared_line(prepared))
        budget = Budget(seed=seed, batch_size=batch_size, epochs=epochs)
        args = (prepared, layout, budget)
        if address is not None:  # one Ray job: search and train, followed from here
            run = training_job.TrainingRun(
                prepared.root, layout, budget, trials, scaling, target_fpr, refit
            )
            outcome, trained = train_job(address, run)
        else:
            outcome = search_weights(*args, trials, scaling) if trials else None
            trained = train(*args, scaling, target_fpr, outcome, refit)
        if outcome is not None:
            log.info(search_line(outcome))
        log.info(model_line(trained, target_fpr))
        quantize = "int8" if quantize_int8 else None
        meta = export(trained.out, layout.artifact_url, quantize)
        for _ in range(PROMOTE_ATTEMPTS):  # again while racing runs move the champion
            metrics = evaluate(layout.artifact_url, prepared, seen.record)
            for problem in (metrics["champion_error"], metrics["schema_change"]):
                if problem:  # the rule still decides; the operator hears of it
                    log.warning("champion %s: %s", shown_url(seen.record["url"]), problem)
            report = run_report(layout, prepared, outcome, metrics, meta, seen.record, trained)
            decision, url = promote(
                layout.artifact_url,
                layout.models_url,
                name,
                layout.version,
                report,
                seen,
                allow_schema_change,
            )
            log.info("%s: %s", "promoted" if decision.promote else "kept", decision.reason)
            if not decision.moved:
                break
            seen = registry.champion_view(layout.models_url, name)
    try:  # report.html beside report.json; a figure that fails must not fail a promotion
        page = report_page(url)
        log.info("report: %s", page)
    except Exception as exc:  # noqa: BLE001 - the decision stands; the operator is told
        page = None
        log.warning("report not written: %s", exc)
    current = registry.read_champion(layout.models_url, name)
    summary = run_summary(report, decision, url, current, time.perf_counter() - started)
    summary["report_url"] = page
    create_markdown_artifact(
        retrain_markdown(name, summary, report),
        key=f"{name}-retrain",
        description="ede retrain",
    )
    if page:
        link = f"{name} {layout.version}: report"
        create_link_artifact(page, link_text=link, key=f"{name}-report")
    if outcome is not None:
        create_table_artifact(
            tuning_rows(outcome), key=f"{name}-tuning", description="Ray Tune trials"
        )
    log.info("champion: %s", shown_url(summary["champion_url"] or "none"))
    return summary
