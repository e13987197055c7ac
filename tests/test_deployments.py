"""prefect.yaml: every entrypoint imports, its parameters validate, its schedule parses, and
its work pool is one that infra/ starts a worker for (compose for the local deployments,
infra/prefect-worker-k8s.yaml for those tagged `cluster`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_is_valid(deployment, monkeypatch):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO)  # entrypoints are relative to the project root, as workers see it
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    params = flow.validate_parameters(deployment.get("parameters", {}))
    assert set(deployment["parameters"]) <= set(params)
    assert deployment["schedules"], "a scheduled deployment"
    for schedule in deployment["schedules"]:
        CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    pool = deployment["work_pool"]["name"]
    if "cluster" in deployment["tags"]:  # Kubernetes: infra's worker Deployment
        workers = list(yaml.safe_load_all((REPO / "infra" / "prefect-worker-k8s.yaml").read_text()))
        commands = [
            " ".join(c["command"]) + " "
            for w in workers
            if w["kind"] == "Deployment"
            for c in w["spec"]["template"]["spec"]["containers"]
        ]
    else:  # the local stack's process workers
        compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
        commands = [str(s.get("command", "")) for s in compose["services"].values()]
    assert any(f"--pool {pool} " in c for c in commands), f"no worker for pool {pool} in infra/"


def test_retraining_weekly_scoring_daily():
    crons = {d["entrypoint"]: d["schedules"][0]["cron"] for d in DEPLOYMENTS}
    assert crons["flows/retrain.py:retrain"].split()[2:] == ["*", "*", "1"]  # one weekday
    assert crons["flows/score.py:score"].split()[2:] == ["*", "*", "*"]
