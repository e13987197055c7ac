"""`make serve`: scheduled retraining on one machine, without containers.

Prefect's ephemeral API (what `make demo` and the tests' harness use) never fires a
schedule; a Prefect server does, and a worker per work pool picks the runs up. So
this starts exactly that, on loopback: `prefect server start`, the work pools that
`prefect.yaml` names (process type), both local deployments of `prefect.yaml` with their
schedules, tags, job variables and concurrency limit (one retrain at a time: runs
that collide queue), and one process worker per pool; it prints where the UI is and
stops everything on Ctrl-C. `prefect.yaml` stays the one description of the
deployments: this reads it, and overrides only what a laptop has differently (the
parameters' URLs, and for tests the schedule).

    python -m flows.serve [--storage DIR] [--port N]

Without `--storage`, the deployments' parameters point at a local folder holding the
demo's data (`flows.demo.write_demo_data`), so the stack runs offline on a fresh
machine; with AWS_* set, pass s3:// URLs with `--param`. The server's database and
home live under `.serve/`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVE_ROOT = Path(".serve")
PREFECT = [sys.executable, "-m", "prefect"]  # this interpreter's Prefect, whatever PATH says


def project() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@dataclass
class Stack:
    """A Prefect server on loopback and the workers started against it."""

    home: Path
    api_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment (AWS_*, RAY_ADDRESS pass through) aimed at the server."""
        return {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }

    def stop(self) -> None:
        """Cancel the runs in flight (a process worker runs each in a session of its own,
        so they would run on against a server that is gone; cancelled, their worker
        stops them and the server records it), then SIGTERM to the workers and the
        server, SIGKILL to whatever is left after 20 s."""
        with contextlib.suppress(Exception):  # a server that is already down: nothing to cancel
            cancel_active_runs(self)
        for proc in reversed(self.processes):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(self.processes):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # stragglers of the group, if any
            proc.wait()


def cancel_active_runs(stack: Stack, timeout: float = 60) -> int:
    """Move every pending or running flow run to Cancelling and wait (up to `timeout`) for
    their workers to stop them; returns how many were cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType as Types
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    active = FlowRunFilter(
        state=FlowRunFilterState(type=Types(any_=[StateType.PENDING, StateType.RUNNING]))
    )
    with client_settings(stack), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=active)
        for run in runs:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
        deadline = time.monotonic() + timeout
        while (
            runs and time.monotonic() < deadline and client.read_flow_runs(flow_run_filter=active)
        ):
            time.sleep(1)
    return len(runs)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int | None = None, **settings: str) -> Stack:
    """`prefect server start` on 127.0.0.1 (a free port unless given), its SQLite database
    under `home`; returns once its API answers. `settings`: PREFECT_* for the server
    (tests shorten the scheduler's loop)."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    stack = Stack(home.resolve(), f"http://127.0.0.1:{port}/api")
    log = open(home / "server.log", "ab")  # noqa: SIM115 - the server's lifetime, not a block
    proc = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=stack.env(**settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches this process; it stops the server itself
    )
    stack.processes.append(proc)
    _wait_healthy(stack, proc)
    return stack


def _wait_healthy(stack: Stack, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            code = proc.returncode
            raise RuntimeError(f"prefect server exited ({code}): see {stack.home}/server.log")
        try:
            if httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stack.stop()
    raise TimeoutError(f"prefect server not healthy after {timeout:.0f} s: {stack.home}/server.log")


@contextlib.contextmanager
def client_settings(stack: Stack) -> Iterator[None]:
    """Prefect's client calls in this process go to `stack`'s server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        yield


def create_pools(stack: Stack, pools: list[str]) -> None:
    """Process work pools, as `prefect work-pool create NAME --type process` makes them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with client_settings(stack), get_client(sync_client=True) as client:
        for name in pools:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:
                pass


def deploy(
    stack: Stack,
    parameters: dict[str, dict[str, Any]] | None = None,
    schedules: dict[str, list] | None = None,
    only: list[str] | None = None,
) -> dict[str, str]:
    """The local deployments of prefect.yaml (`only` these names, else all), from this checkout,
    on `stack`'s server; returns {deployment name: "flow/deployment"}. `parameters` and
    `schedules` (Prefect schedule objects) override prefect.yaml's, per deployment."""
    from prefect.flows import Flow

    deployed = {}
    with client_settings(stack):
        for spec in local_deployments():
            name = spec["name"]
            if only is not None and name not in only:
                continue
            flow = Flow.from_source(source=str(ROOT), entrypoint=spec["entrypoint"])
            flow.deploy(
                name=name,
                work_pool_name=spec["work_pool"]["name"],
                job_variables=spec["work_pool"].get("job_variables"),
                schedules=(schedules or {}).get(name) or _schedules(spec),
                concurrency_limit=_concurrency(spec.get("concurrency_limit")),
                parameters={**spec.get("parameters", {}), **(parameters or {}).get(name, {})},
                description=spec.get("description"),
                tags=spec.get("tags"),
                build=False,
                push=False,
                print_next_steps=False,
            )
            deployed[name] = f"{flow.name}/{name}"
    return deployed


def _schedules(spec: dict[str, Any]) -> list:
    from prefect.schedules import Cron

    return [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules", [])]


def _concurrency(limit: dict[str, Any] | None):
    if limit is None:
        return None
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    strategy = ConcurrencyLimitStrategy(limit.get("collision_strategy", "ENQUEUE"))
    return ConcurrencyLimitConfig(limit=int(limit["limit"]), collision_strategy=strategy)


def start_workers(stack: Stack, pools: list[str], **settings: str) -> None:
    """One process worker per pool; each runs its flow runs as subprocesses of its own."""
    for pool in pools:
        log = open(stack.home / f"worker-{pool}.log", "ab")  # noqa: SIM115 - the worker's lifetime
        stack.processes.append(
            subprocess.Popen(
                [*PREFECT, "worker", "start", "--pool", pool, "--type", "process"],
                env=stack.env(**settings),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )


CLUSTER_TAG = "cluster"  # prefect.yaml's deployments for Kubernetes (infra/): not served here


def local_deployments() -> list[dict[str, Any]]:
    return [d for d in project()["deployments"] if CLUSTER_TAG not in d.get("tags", [])]


def pools() -> list[str]:
    return sorted({d["work_pool"]["name"] for d in local_deployments()})


def local_parameters(storage: Path) -> dict[str, dict[str, Any]]:
    """The deployments aimed at a local folder holding the demo's data."""
    from flows.demo import write_demo_data

    train_url, batch_url = write_demo_data(storage)
    return {
        "retrain-weekly": {"data_url": train_url, "storage_url": str(storage), "workers": 1},
        "score-daily": {
            "input_url": str(Path(batch_url).parent),
            "output_url": str(storage / "scores"),
            "storage_url": str(storage),
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=4200)
    p.add_argument("--storage", help="folder for the demo's data and the models (default .serve)")
    args = p.parse_args(argv)
    storage = Path(args.storage or SERVE_ROOT / "storage").resolve()
    stack = start_server(SERVE_ROOT / "prefect", args.port)
    try:
        names = pools()
        create_pools(stack, names)
        deployed = deploy(stack, local_parameters(storage))
        start_workers(stack, names)
        print(f"Prefect UI: {stack.ui_url}")
        print(f"deployments: {', '.join(deployed.values())} (work pools {', '.join(names)})")
        first = deployed["retrain-weekly"]
        print(f"run one now: PREFECT_API_URL={stack.api_url} prefect deployment run '{first}'")
        print("Ctrl-C stops the server and the workers")
        for stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or `kill`, even when started
            signal.signal(stop, signal.default_int_handler)  # in the background (SIGINT ignored)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
