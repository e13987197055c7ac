"""`run`: a Ray job submitted through the Jobs API, followed to its end, and stopped if its
caller is.

Why the Jobs API: a caller that joins a cluster (`ray.init(RAY_ADDRESS)`, or Ray
Client's `ray://`) is the workload's driver, so a dropped connection or a restarted
Prefect worker kills the run. A submitted job's driver runs on the cluster's head;
the caller only polls its status and logs over HTTP, and a poll that fails is retried.
The caller still owns the job: interrupted (a cancelled flow run's SIGTERM, Ctrl-C),
it stops the job, so nothing trains on after nobody waits for it.

The credentials a job needs travel in its runtime environment's variables, taken
from this process's environment by name (`ede.distributed.cluster.PASS_ENV`): only
their names are logged, the secret ones' values are masked in every line of the job's
logs that is passed on (`redact`), and nothing secret goes into the entrypoint, which
Ray shows everywhere.
This module knows nothing of Prefect: job logs go to a callback.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ede.distributed.cluster import passed_env
from ede.storage import first_line

SUBMIT_ENV = "EDE_RAY_SUBMIT"  # "jobs": submit through the Jobs API; "direct"/unset: join or local
ADDRESS_ENV = "RAY_JOBS_ADDRESS"  # the head's dashboard, http://HOST:8265
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STOP_WAIT_S = 60.0
AGENT_WAIT_S = 120.0  # a fresh head's dashboard answers before its job agent does
POLL_ERRORS_TOLERATED = 30  # consecutive failed polls (a head restarting) before giving up

Log = Callable[[str], None]


class JobFailed(RuntimeError):
    """A job that ended FAILED or STOPPED; the message ends with its last error line."""


def jobs_address(explicit: str | None = None) -> str | None:
    """The Jobs API address to submit to, or None to run on Ray directly (join
    `RAY_ADDRESS`, else a local Ray). `explicit` (a flow parameter) wins over
    `EDE_RAY_SUBMIT=jobs` with `RAY_JOBS_ADDRESS`."""
    if explicit:
        return _checked(explicit, "ray_jobs_address")
    mode = os.environ.get(SUBMIT_ENV, "").strip().lower()
    if mode in ("", "direct"):
        return None
    if mode != "jobs":
        raise ValueError(f"{SUBMIT_ENV}={mode!r}: expected 'jobs' or 'direct'")
    address = os.environ.get(ADDRESS_ENV, "").strip()
    if not address:
        raise ValueError(
            f"{SUBMIT_ENV}=jobs needs {ADDRESS_ENV}: the Ray head's dashboard, http://HOST:8265"
        )
    return _checked(address, ADDRESS_ENV)


def _checked(address: str, name: str) -> str:
    if not address.startswith(("http://", "https://")):
        raise ValueError(f"{name}={address!r}: a Ray Jobs address is http(s)://HOST:8265")
    return address.rstrip("/")


@dataclass(frozen=True)
class Job:
    client: Any  # ray.job_submission.JobSubmissionClient
    id: str

    def status(self) -> str:
        return str(self.client.get_job_status(self.id).value)

    def logs(self) -> str:
        return self.client.get_job_logs(self.id)


def client(address: str):
    """A Jobs API client for `address`; an unreachable head is one line naming the address.

    Ray's client lets `RAY_ADDRESS` override the address it is given, and resolves a
    HOST:PORT there by opening a GCS connection that becomes this process's Ray key-value
    client (Ray's `internal_kv`). A flow whose other steps join the cluster has exactly
    that `RAY_ADDRESS`: its Ray calls would then go to that cluster for good, and fail
    once it is gone. `RAY_API_SERVER_ADDRESS`, which Ray reads first, pins the address
    for the construction (the only place Ray reads either).
    """
    from ray.job_submission import JobSubmissionClient

    with _CLIENT_LOCK:
        before = os.environ.get(API_SERVER_ENV)
        os.environ[API_SERVER_ENV] = address
        try:
            return JobSubmissionClient(address)
        except Exception as exc:  # requests', aiohttp's and Ray's own types
            raise ConnectionError(f"Ray Jobs API at {address}: {first_line(exc)}") from None
        finally:
            if before is None:
                del os.environ[API_SERVER_ENV]
            else:
                os.environ[API_SERVER_ENV] = before


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
_CLIENT_LOCK = threading.Lock()


def _submit(job: Job, address: str, entrypoint, env: dict[str, str], log: Log, resources) -> None:
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            job.client.submit_job(
                entrypoint=shlex.join(entrypoint),
                submission_id=job.id,
                runtime_env={"env_vars": env},
                **resources,
            )
            break
        except RuntimeError as exc:  # a head just started: its job agent is not up yet
            if "try again" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    log(f"Ray job {job.id} submitted to {address}; environment passed: {', '.join(sorted(env))}")


def follow(job: Job, log: Log, poll_s: float = 1.0) -> str:
    """Wait for `job` to end, each new line of its logs sent to `log`; its final status."""
    seen, errors = 0, 0
    while True:
        try:
            status = job.status()
            text = job.logs()
            errors = 0
        except Exception:  # noqa: BLE001 - a head briefly unreachable: poll again
            errors += 1
            if errors > POLL_ERRORS_TOLERATED:
                raise
            time.sleep(poll_s)
            continue
        for line in text[seen:].splitlines():
            log(line)
        seen = len(text)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def stop(job: Job, wait_s: float = STOP_WAIT_S) -> str:
    """Stop `job` and wait (up to `wait_s`) for it to end; its status then."""
    job.client.stop_job(job.id)
    deadline = time.monotonic() + wait_s
    status = job.status()
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = job.status()
    return status


def redact(line: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        line = line.replace(value, "***")
    return line


def secret_values(env: dict[str, str]) -> list[str]:
    """The values among `env` that no log may show: secret keys' and tokens'."""
    return [v for k, v in env.items() if ("SECRET" in k or "TOKEN" in k) and v]


def last_error_line(logs: str, fallback: str = "") -> str:
    """The line a failed job's logs end on (a traceback's exception, or ede's one-line
    error), else `fallback` (Ray's own message)."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    return lines[-1] if lines else fallback


def run(
    address: str,
    entrypoint: Sequence[str],
    *,
    submission_id: str,
    log: Log,
    env: dict[str, str] | None = None,
    poll_s: float = 1.0,
    **resources: Any,
) -> None:
    """Submit, follow to the end, and stop the job if this call is interrupted before it
    ends; a job that did not succeed raises `JobFailed` with its last error line. Secret
    values of `env` are masked in what reaches `log` and the error."""
    env = passed_env() if env is None else env
    secrets = secret_values(env)
    log = _masked(log, secrets)
    job = Job(client(address), submission_id)
    status = None
    try:  # from the submission on: a signal may land before submit_job has returned
        _submit(job, address, entrypoint, env, log, resources)
        status = follow(job, log, poll_s)
    finally:
        if status is None:  # interrupted (cancellation, a signal, a lost head) or refused
            log(f"stopping Ray job {job.id}")
            try:
                log(f"Ray job {job.id}: {stop(job)}")
            except Exception as exc:  # noqa: BLE001 - the interruption is what propagates
                log(f"Ray job {job.id} not stopped: {first_line(exc)}")
    if status != "SUCCEEDED":
        info = job.client.get_job_info(job.id)
        line = last_error_line(job.logs(), str(info.message or ""))
        raise JobFailed(redact(f"Ray job {job.id} {status}: {line}", secrets))


def _masked(log: Log, secrets: Sequence[str]) -> Log:
    return lambda line: log(redact(line, secrets))
