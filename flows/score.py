"""Scheduled batch scoring with the champion (or a given model), around `ede score`.

Scoring is idempotent: outputs that already exist are skipped, so a retry after a
storage hiccup or a crash finishes the job instead of redoing it. Each model writes
under `<output_url>/model=<version>/` unless `per_model` is off
(`ede.pipeline.scoring.output_for`): a promotion then starts a new sub-prefix instead of
being refused by the previous champion's. Nothing here
imports the retraining side, so a scoring worker never loads Ray or torch.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from ede.pipeline import markdown, scoring
from ede.scoring.batch import Summary
from ede.scoring.batch import score as score_tables
from flows.console import failure_line, quiet_tracebacks
from flows.io_retries import STORAGE_RETRIES
from flows.params import ModelName, PositiveInt

quiet_tracebacks()  # a failed run: one console line, tracebacks in the debug log


@task(name="resolve-model", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def resolve_model(storage_url: str, name: str, model_url: str | None) -> str:
    return scoring.resolve_model(storage_url, name, model_url)


@task(name="score", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def score_batch(
    model_url: str, input_url: str, output_url: str, batch_size: int, threads: int, overwrite: bool
) -> Summary:
    logger = get_run_logger()
    summary = score_tables(
        model_url,
        input_url,
        output_url,
        batch_size=batch_size,
        threads=threads,
        overwrite=overwrite,
        warn=logger.warning,
    )
    logger.info(summary.line())
    return summary


@task(name="ask-for-retrain", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def ask_for_retrain(
    storage_url: str, name: str, drift: dict | None, deployment: str, cooldown_hours: float
) -> str | None:
    """Trigger `deployment` (the retrain's) when the scores drifted and no retrain was asked
    for within the cool-down (`ede.pipeline.scoring.claim_retrain`)."""
    from prefect.deployments import run_deployment

    reason = scoring.claim_retrain(storage_url, name, drift, cooldown_hours)
    if reason is None:
        return None
    run = run_deployment(deployment, timeout=0, tags=["drift"], as_subflow=False)
    get_run_logger().warning("retrain asked for (%s): %s, run %s", reason, deployment, run.name)
    return str(run.id)


@flow(name="ede-score", on_failure=[failure_line], on_crashed=[failure_line])
def score(
    input_url: str,
    output_url: str,
    storage_url: str,
    model_url: str | None = None,
    name: ModelName = "ede",
    batch_size: PositiveInt = 65536,
    threads: Annotated[int, Field(ge=1, le=256)] = 1,
    overwrite: bool = False,
    per_model: bool = True,
    retrain_deployment: str | None = None,
    retrain_cooldown_hours: Annotated[float, Field(ge=0)] = scoring.RETRAIN_COOLDOWN_HOURS,
) -> dict:
    """Score the Parquet/CSV file(s) at `input_url` into `output_url`/model=<version>
    (`output_url` itself when not `per_model`); `model_url` defaults to the champion of
    `name` under `storage_url`. With `retrain_deployment` ("flow/deployment"), a batch whose
    scores drifted from the model's validation scores triggers it, at most once per
    `retrain_cooldown_hours`."""
    model = resolve_model(storage_url, name, model_url)
    output = scoring.output_for(output_url, model, per_model)
    summary = score_batch(model, input_url, output, batch_size, threads, overwrite)
    create_markdown_artifact(
        markdown.score_markdown(name, model, input_url, output, summary),
        key=f"{name}-score",
        description="ede batch scoring",
    )
    result = scoring.score_result(model, summary, output)
    result["retrain_run"] = None
    if retrain_deployment:
        result["retrain_run"] = ask_for_retrain(
            storage_url, name, summary.drift, retrain_deployment, retrain_cooldown_hours
        )
    return result
