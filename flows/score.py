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
from flows.io_retries import STORAGE_RETRIES
from flows.params import ModelName, PositiveInt


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


@flow(name="ede-score")
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
) -> dict:
    """Score the Parquet/CSV file(s) at `input_url` into `output_url`/model=<version>
    (`output_url` itself when not `per_model`); `model_url` defaults to the champion of
    `name` under `storage_url`."""
    model = resolve_model(storage_url, name, model_url)
    output = scoring.output_for(output_url, model, per_model)
    summary = score_batch(model, input_url, output, batch_size, threads, overwrite)
    create_markdown_artifact(
        markdown.score_markdown(name, model, input_url, output, summary),
        key=f"{name}-score",
        description="ede batch scoring",
    )
    return scoring.score_result(model, summary, output)
