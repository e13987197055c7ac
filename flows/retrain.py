"""Scheduled retraining: data in object storage -> search -> train -> export -> promote.

Every task wraps one ede library call. Storage layout under `storage_url`:

    prepared/<key>/        content-addressed splits (ede.data.ingest), reused on rerun
    runs/<version>/        this run's scratch: Ray checkpoints, tuning results,
                           the model folder and the exported artifact
    models/<name>/<version>/ and models/<name>/champion   (ede.export.registry)

Nothing reaches `models/` until every step before `promote` has succeeded, so a
failed run publishes nothing. RAY_ADDRESS joins a Ray cluster, else Ray starts
locally once for the run; AWS_* / AWS_ENDPOINT_URL point s3:// at S3 or MinIO.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from ede.core.estimator import ESAD
from ede.data.ingest import PreparedSplits, SplitSettings, prepare_splits
from ede.distributed import cluster
from ede.distributed import trainer as dt
from ede.distributed.model_folder import model_folder_from_checkpoint, train_model_folder
from ede.distributed.tuning import SearchOutcome, SearchSpec, search, trial_checkpoint
from ede.export import registry
from ede.export.exporter import export_folder
from ede.scoring.evaluation import evaluate_artifact
from ede.storage import shown_url
from flows.io_retries import STORAGE_RETRIES

ModelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


@task(name="ingest", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def ingest(data_url: str, storage_url: str, settings: SplitSettings) -> PreparedSplits:
    prepared = prepare_splits(data_url, storage_url, settings)
    get_run_logger().info(
        "data %s: %s rows (fit %d, validation %d, test %d; labelled %s), sha256 %s, %s %s",
        prepared.source,
        sum(prepared.rows.values()),
        prepared.rows["fit"],
        prepared.rows["validation"],
        prepared.rows["test"],
        prepared.labelled,
        prepared.data_sha256[:12],
        "reused" if prepared.reused else "wrote",
        shown_url(prepared.root),
    )
    return prepared


@task(name="search", cache_policy=NO_CACHE)
def search_weights(
    prepared: PreparedSplits,
    run_url: str,
    base: ESAD,
    spec: SearchSpec,
    scaling: cluster.Scaling,
) -> SearchOutcome:
    outcome = search(
        base,
        prepared.train_url,
        cluster.storage_path(run_url),
        spec,
        scaling,
        label_column=prepared.label_column,
        experiment="tune",
        validation_rows=prepared.validation_rows,
    )
    get_run_logger().info(
        "search: %d trials in %.0f s; best %s, validation AUROC %.4f",
        len(outcome.table),
        outcome.wall_s,
        outcome.best_params,
        outcome.best_val_auroc,
    )
    return outcome


@task(name="train", cache_policy=NO_CACHE)
def train(
    prepared: PreparedSplits,
    run_url: str,
    det: ESAD,
    scaling: cluster.Scaling,
    target_fpr: float,
    outcome: SearchOutcome | None = None,
) -> str:
    """The final model: the search's best trial already trained the winning config on these
    rows with this budget and seed, so its checkpoint is taken as is, with the rows the
    search prepared; without a search, one Ray Train run with the defaults."""
    if outcome is not None:
        data = outcome.data
    else:
        data = dt.prepare_data(
            prepared.train_url,
            label_column=prepared.label_column,
            seed=det.seed,
            scaling=det.scaling,
            validation_rows=prepared.validation_rows,
        )
    out, storage = f"{run_url}/model", cluster.storage_path(run_url)
    common = dict(
        label_column=prepared.label_column,
        target_fpr=target_fpr,
        record={"data": {"source": prepared.source, "sha256": prepared.data_sha256}},
    )
    if outcome is not None:
        checkpoint = trial_checkpoint(outcome.checkpoint, storage)
        trained = model_folder_from_checkpoint(det, checkpoint, data, out, **common)
    else:
        run = dt.RunSpec(storage, name="train")
        trained = train_model_folder(det, data, out, scaling, run, **common)
    get_run_logger().info(
        "model: validation AUROC %.4f; threshold %.4g at target FPR %g",
        trained.final_val_auroc,
        trained.calibration.threshold,
        target_fpr,
    )
    return out


@task(name="export", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def export(model_url: str, artifact_url: str, quantize_int8: bool) -> dict:
    return export_folder(model_url, artifact_url, quantize="int8" if quantize_int8 else None)


@task(name="evaluate", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def evaluate(artifact_url: str, prepared: PreparedSplits, champion: dict | None) -> dict:
    """The candidate's test metrics, and the champion's on the same rows when there is one."""
    new = evaluate_artifact(artifact_url, prepared.test_url, label_column=prepared.label_column)
    out: dict[str, Any] = {"candidate": new, "champion": None, "champion_error": None}
    if champion is not None:
        try:
            out["champion"] = evaluate_artifact(
                champion["url"], prepared.test_url, label_column=prepared.label_column
            )
        except (ValueError, FileNotFoundError) as exc:
            out["champion_error"] = str(exc)
    return out


@task(name="promote", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def promote(
    artifact_url: str, models_url: str, name: str, version: str, report: dict
) -> tuple[registry.Decision, str]:
    metrics = report["metrics"]
    decision = registry.decide(metrics["candidate"], metrics["champion"], metrics["champion_error"])
    report = {**report, "decision": {"promote": decision.promote, "reason": decision.reason}}
    url = registry.publish(artifact_url, models_url, name, version, report)
    if decision.promote:
        registry.set_champion(
            models_url,
            name,
            {
                "name": name,
                "version": version,
                "url": url,
                "test": metrics["candidate"],
                "data_sha256": report["data"]["sha256"],
                "test_url": report["data"]["test_url"],
                "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    get_run_logger().info("%s: %s", "promoted" if decision.promote else "kept", decision.reason)
    return decision, url


@flow(name="ede-retrain")
def retrain(
    data_url: str,
    storage_url: str,
    name: ModelName = "ede",
    label_column: str = "label",
    trials: Annotated[int, Field(ge=0, le=1000)] = 4,
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 20,
    batch_size: Annotated[int, Field(ge=1)] = 256,
    workers: Annotated[int, Field(ge=1)] = 1,
    use_gpu: bool = False,
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0,
    test_fraction: Fraction = 0.25,
    validation_fraction: Fraction = 0.2,
    target_fpr: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.01,
    min_rows: Annotated[int, Field(ge=2)] = 50,
    quantize_int8: bool = True,
    seed: int = 0,
) -> dict:
    """Retrain `name` on the table(s) at `data_url`; promote the result if it is at least as
    good as the champion on the same test rows. `trials=0` skips the search (defaults)."""
    logger = get_run_logger()
    storage = storage_url.rstrip("/")
    version = registry.new_version()
    run_url, models_url = f"{storage}/runs/{version}", f"{storage}/models"
    scaling = cluster.Scaling(workers, use_gpu, cpus_per_worker)
    scaling.check()
    settings = SplitSettings(label_column, test_fraction, validation_fraction, seed, min_rows)
    champion = registry.read_champion(models_url, name)
    started = time.perf_counter()
    with cluster.ray_session():
        scaling.check_cluster()
        prepared = ingest(data_url, storage, settings)
        base = ESAD(seed=seed, batch_size=batch_size, epochs=epochs, min_steps=None, max_steps=None)
        outcome = None
        if trials:
            spec = SearchSpec(trials=trials, epochs=epochs, refit=False, seed=seed, verbose=0)
            outcome = search_weights(prepared, run_url, base, spec, scaling)
        params = dict(outcome.best_params) if outcome else {}
        det = base.set_params(**params)
        model_url = train(prepared, run_url, det, scaling, target_fpr, outcome)
    meta = export(model_url, f"{run_url}/artifact", quantize_int8)
    metrics = evaluate(f"{run_url}/artifact", prepared, champion)
    report = {
        "version": version,
        "data": {
            "source": prepared.source,
            "sha256": prepared.data_sha256,
            "prepared": prepared.root,
            "test_url": prepared.test_url,
            "rows": prepared.rows,
            "labelled": prepared.labelled,
        },
        "best_params": params,
        "search": None if outcome is None else _search_summary(outcome),
        "metrics": metrics,
        "threshold": meta["threshold"],
        "previous_champion": champion,
        "run_url": run_url,
    }
    decision, url = promote(f"{run_url}/artifact", models_url, name, version, report)
    current = registry.read_champion(models_url, name)
    summary = {
        "version": version,
        "model_url": url,
        "promoted": decision.promote,
        "reason": decision.reason,
        "test": metrics["candidate"],
        "champion_test": metrics["champion"],
        "champion_url": current["url"] if current else None,
        "champion_version": current["version"] if current else None,
        "data_sha256": prepared.data_sha256,
        "best_params": params,
        "seconds": time.perf_counter() - started,
    }
    _publish_artifacts(name, summary, report, outcome)
    logger.info("champion: %s", shown_url(summary["champion_url"] or "none"))
    return summary


def _search_summary(outcome: SearchOutcome) -> dict:
    return {
        "trials": len(outcome.table),
        "best_trial": outcome.best_trial,
        "best_val_auroc": outcome.best_val_auroc,
        "results": f"{outcome.table_url}.parquet",
        "seconds": outcome.wall_s,
    }


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _publish_artifacts(
    name: str, summary: dict, report: dict, outcome: SearchOutcome | None
) -> None:
    new, old = summary["test"], summary["champion_test"] or {}
    lines = [
        f"# ede retrain: {name} {summary['version']}",
        "",
        f"**Decision:** {'promoted' if summary['promoted'] else 'kept the champion'}: "
        f"{summary['reason']}",
        "",
        "| | candidate | champion (before this run) |",
        "|---|---|---|",
        f"| test AUROC | {_fmt(new.get('auroc'))} | {_fmt(old.get('auroc'))} |",
        f"| test AUPRC | {_fmt(new.get('auprc'))} | {_fmt(old.get('auprc'))} |",
        f"| flagged / rows | {new['flagged']} / {new['rows']} | "
        f"{_fmt(old.get('flagged'))} / {_fmt(old.get('rows'))} |",
        "",
        f"- data: `{report['data']['source']}`, sha256 `{summary['data_sha256'][:16]}`, "
        f"rows {report['data']['rows']}, labelled {report['data']['labelled']}",
        f"- best config: {summary['best_params'] or 'defaults (no search)'}",
        f"- model: `{shown_url(summary['model_url'])}`",
        f"- champion now: `{shown_url(summary['champion_url'] or 'none')}`",
        f"- wall time: {summary['seconds']:.0f} s",
    ]
    create_markdown_artifact("\n".join(lines), key=f"{name}-retrain", description="ede retrain")
    if outcome is not None:
        rows = outcome.table.drop(columns=["val_auroc_by_epoch"]).to_dict(orient="records")
        rows = [{k: _cell(v) for k, v in row.items()} for row in rows]
        create_table_artifact(rows, key=f"{name}-tuning", description="Ray Tune trials")


def _cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v.item() if hasattr(v, "item") else v
