"""Where Ray Train and Tune run: joining or starting Ray, worker resources, checkpoint storage.

Configuration only, so the same code runs on this 2-core machine and on a GPU
cluster: `RAY_ADDRESS` joins a cluster (else a local Ray starts once per job) and hands
its tasks this process's storage credentials (`PASS_ENV`),
`Scaling` says how many workers and whether each gets a GPU, `storage_path`
checks the checkpoint URL before anything trains.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec
import ray
import ray.train

from ede.storage import absolute, first_line, shown_url


def connect(*, log_to_driver: bool = False, train_v2: bool = True) -> float:
    """Join `RAY_ADDRESS` if set, else start a local Ray; returns the seconds it took.

    A local start gets a custom `trial_driver` resource: Tune's trial drivers hold
    one unit of it and no CPU, so on 2 cores both CPUs stay with the workers.
    `train_v2`: the job may start a TorchTrainer (a run on several workers), so the
    local Ray starts its dashboard too (below); a job whose every training is one
    process (`Scaling.workers == 1`: a task or a Tune trial) does without its dozen
    processes and their start-up (`ray.init` 8.0 s against 5.3 s on this machine).
    """
    address = join_address()  # checked even when Ray is up: the setting is wrong either way
    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    env = controller_env()
    if os.environ.get(JOB_ENV):  # a Ray job's driver: its runtime env came with the job
        ray.init(log_to_driver=log_to_driver)
    elif address:  # the cluster's workers get this process's credentials, by name
        ray.init(log_to_driver=log_to_driver, runtime_env={"env_vars": passed_env()})
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local, loopback-only cluster
        os.environ.update(env)  # inherited by the local raylet, hence by every actor
        # The dashboard process serves Ray's State API, which Train V2's placement-group
        # cleaner needs: without it, every finished or stopped run leaks its CPUs.
        ray.init(
            resources={"trial_driver": 8},
            include_dashboard=train_v2,
            dashboard_host="127.0.0.1",
            log_to_driver=log_to_driver,
        )
    return time.perf_counter() - start


def join_address() -> str:
    """The cluster `RAY_ADDRESS` names, '' for a local Ray. A Jobs API (dashboard) address
    there is the likeliest mistake, and `ray.init` would only time out on it."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address.startswith(("http://", "https://")):
        raise ValueError(
            f"RAY_ADDRESS={address}: that is a Ray Jobs (dashboard) address; joining needs "
            "the head's HOST:6379 (to submit jobs: EDE_RAY_SUBMIT=jobs, RAY_JOBS_ADDRESS)"
        )
    return address


@contextmanager
def ray_session(*, log_to_driver: bool = False, train_v2: bool = True) -> Iterator[float]:
    """Ray for the length of one job (a flow run): joined or started once, and shut down
    afterwards only if this job started it. Yields the seconds connecting took."""
    started = not ray.is_initialized()
    seconds = connect(log_to_driver=log_to_driver, train_v2=train_v2)
    try:
        yield seconds
    finally:
        if started:
            ray.shutdown()


def controller_env() -> dict[str, str]:
    """Ray Train's controller collects reports when it polls its workers, every 2 s by
    default, and a worker's report blocks until the previous one is collected: epochs
    shorter than 2 s would all last 2 s. Polling every 0.1 s keeps them at their own
    length (set RAY_TRAIN_HEALTH_CHECK_INTERVAL_S to override)."""
    return {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get(POLL_ENV, "0.1")}


POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Set by Ray in a submitted job's driver: a runtime env given again to ray.init conflicts
# with the job's, and Ray's error about it prints both, values included.
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# What a job on a cluster (joined, or submitted: ede.distributed.jobs) gets from this
# process's environment: storage credentials and endpoint, thread caps. Names are logged,
# values never.
PASS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "OMP_NUM_THREADS",
)


def passed_env(names: tuple[str, ...] = PASS_ENV) -> dict[str, str]:
    """Those of `names` that are set here, and Ray Train's polling interval."""
    return {**{n: os.environ[n] for n in names if os.environ.get(n)}, **controller_env()}


@dataclass(frozen=True)
class Scaling:
    """Workers of one training run; GPU runs get one GPU per worker."""

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0

    def check(self, on_cluster: bool = False) -> None:
        """Configuration errors, before Ray is touched. `on_cluster`: the training runs
        on a cluster this process does not join (a Ray job), so no local GPU is needed."""
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: need at least 1 worker")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker={self.cpus_per_worker}: must be > 0")
        remote = on_cluster or os.environ.get("RAY_ADDRESS")
        if self.use_gpu and not remote and not _local_cuda():
            raise ValueError("--gpu: this machine has no CUDA GPU (and no RAY_ADDRESS cluster)")

    def check_cluster(self) -> None:
        """A run the cluster can never place would wait forever: fail with one line instead."""
        have = ray.cluster_resources()
        if self.use_gpu and have.get("GPU", 0) < self.workers:
            raise ValueError(
                f"--gpu with {self.workers} worker(s) needs {self.workers} GPU(s); "
                f"the Ray cluster has {int(have.get('GPU', 0))}"
            )
        need = self.workers * self.cpus_per_worker
        if have.get("CPU", 0) < need:
            raise ValueError(
                f"{self.workers} worker(s) x {self.cpus_per_worker} CPU need {need:g} CPUs; "
                f"the Ray cluster has {have.get('CPU', 0):g}"
            )

    def config(self) -> ray.train.ScalingConfig:
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = 1
        return ray.train.ScalingConfig(
            num_workers=self.workers, use_gpu=self.use_gpu, resources_per_worker=resources
        )


def _local_cuda() -> bool:
    import torch  # here, not above: the flow's process uses Scaling and never needs torch

    return torch.cuda.is_available()


def storage_path(url: str) -> str:
    """Check that `url` takes writes now (one small probe file), so a run never dies at its
    first checkpoint; returns the form Ray's RunConfig wants (local paths made absolute)."""
    url = absolute(url)
    probe = f"{url.rstrip('/')}/.ede-probe-{uuid.uuid4().hex}"
    try:
        fs, path = fsspec.core.url_to_fs(probe)
        if "file" in fs.protocol:
            fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(b"ok")
        fs.rm(path)
    except Exception as exc:  # every backend fails in its own types
        raise ValueError(f"storage {shown_url(url)} is not writable: {first_line(exc)}") from None
    return url
