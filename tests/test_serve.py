"""Deployments that fire: a real Prefect server schedules runs, process workers run them.

Prefect's ephemeral API (the other flow tests' harness) never fires a schedule, so
this starts what `make serve` starts (`flows.serve`): `prefect server start` on
127.0.0.1, the work pools of prefect.yaml, its deployments from this checkout, and a
process worker per pool, all against the loopback S3 server. About 3 minutes on
2 cores: two retrains (one scheduled, one triggered, queued by the deployment's
concurrency limit) and a scheduled scoring run, each a flow-run subprocess that
starts its own Ray.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import s3fs

from ede.export import registry

FAST = {  # the scheduler and workers poll every 2 s instead of every 60 and 10
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
}
WORKER = {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
QUICK = dict(trials=0, epochs=1, batch_size=64, workers=1, quantize_int8=False, min_rows=50)


def _runs(stack, deployment_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows import serve

    with serve.client_settings(stack), get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def _wait_done(stack, deployment_id, count: int, timeout: float):
    """The deployment's runs once `count` of them are final; fails on a failed run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(stack, deployment_id)
        final = [r for r in runs if r.state and r.state.is_final()]
        bad = [r for r in final if not r.state.is_completed()]
        assert not bad, [(r.name, r.state.name, r.state.message) for r in bad]
        if len(final) >= count:
            return final
        time.sleep(2)
    states = [(r.name, r.state.name if r.state else None) for r in _runs(stack, deployment_id)]
    raise AssertionError(f"runs not done after {timeout:.0f} s: {states}; {stack.home}")


def _deployment_id(stack, full_name: str):
    from prefect.client.orchestration import get_client

    from flows import serve

    with serve.client_settings(stack), get_client(sync_client=True) as client:
        return client.read_deployment_by_name(full_name).id


def _logs(stack, flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows import serve

    with serve.client_settings(stack), get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def _hourly_from_soon() -> dict:
    """Every hour from 10 s from now: the scheduler's first run is then, the next ones an
    hour apart (an anchor already past would put the first run an hour away)."""
    from prefect.schedules import Interval

    soon = datetime.now(timezone.utc) + timedelta(seconds=10)
    return {n: [Interval(3600, anchor_date=soon)] for n in ("retrain-weekly", "score-daily")}


def test_scheduled_retrain_and_scoring_run_on_a_real_server(
    tmp_path, s3_bucket, write_anomaly_table
):
    from prefect.deployments import run_deployment

    from flows import serve

    data = write_anomaly_table(f"{s3_bucket}/incoming/table.parquet", n_normal=600, n_anomaly=40)
    write_anomaly_table(f"{s3_bucket}/batches/day-1.parquet", n_normal=200, n_anomaly=10)
    name = "transactions"
    params = {
        "retrain-weekly": {"data_url": data, "storage_url": s3_bucket, "name": name, **QUICK},
        "score-daily": {
            "input_url": f"{s3_bucket}/batches/",
            "output_url": f"{s3_bucket}/scores/",
            "storage_url": s3_bucket,
            "name": name,
        },
    }

    stack = serve.start_server(tmp_path / "prefect", **FAST)
    try:
        pools = serve.pools()
        serve.create_pools(stack, pools)
        deployed = serve.deploy(stack, params, _hourly_from_soon(), only=["retrain-weekly"])
        retrain_id = _deployment_id(stack, deployed["retrain-weekly"])
        serve.start_workers(stack, pools, **WORKER)
        # a run triggered by hand while the scheduled one is due: the deployment's
        # concurrency limit queues it behind the scheduled one
        with serve.client_settings(stack):
            run_deployment(deployed["retrain-weekly"], timeout=0)
        retrains = _wait_done(stack, retrain_id, count=2, timeout=420)
        assert sorted(r.auto_scheduled for r in retrains) == [False, True]  # one by the schedule
        first, second = sorted(retrains, key=lambda r: r.start_time)
        assert second.start_time >= first.end_time, "two retrains overlapped"
        champion = registry.read_champion(f"{s3_bucket}/models", name)
        assert champion is not None and champion["version"]
        assert "promoted" in _logs(stack, first.id) or "kept" in _logs(stack, first.id)

        deployed = serve.deploy(stack, params, _hourly_from_soon(), only=["score-daily"])
        score_id = _deployment_id(stack, deployed["score-daily"])
        (scored,) = _wait_done(stack, score_id, count=1, timeout=240)
        assert scored.auto_scheduled
        champion = registry.read_champion(f"{s3_bucket}/models", name)
        fs = s3fs.S3FileSystem()
        fs.invalidate_cache()
        prefix = f"{s3_bucket[5:]}/scores/model={champion['version']}"
        record = json.loads(fs.cat_file(f"{prefix}/_ede-scored.json"))
        assert record["files"]["day-1.parquet"]["rows"] == 210
        assert fs.exists(f"{prefix}/day-1.parquet")
        assert "scored 1 file(s), 210 rows" in _logs(stack, scored.id)
    finally:
        stack.stop()
    assert all(p.poll() is not None for p in stack.processes)  # nothing left running
