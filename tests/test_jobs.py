"""The retraining flow's search and training as a Ray job (EDE_RAY_SUBMIT=jobs): a real Ray
head started here on loopback (`ray start --head`), a real Jobs API, S3 on moto's server.

The head is this module's own: its own ports and temp dir, its processes marked by an
environment variable, and only those killed at the end (never `ray stop`, which stops
every Ray on the machine). Its environment holds no AWS variable, so a job reaches S3
only with what the flow passes through its runtime environment.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3fs

from ede.distributed import jobs
from flows.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(epochs=2, batch_size=64, quantize_int8=False, min_rows=50, trials=0)
MARK = "EDE_TEST_RAY_HEAD"


@dataclass(frozen=True)
class Head:
    gcs: str  # 127.0.0.1:PORT, what RAY_ADDRESS joins
    jobs: str  # http://127.0.0.1:PORT, the Jobs API


def _marked(marker: str) -> list[int]:
    """PIDs of the processes whose environment carries `marker`: the head's, and every
    worker and job driver it started."""
    pids = []
    needle = f"{MARK}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return pids


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    marker = uuid.uuid4().hex
    temp = tempfile.mkdtemp(prefix="ede-rh-")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(
        {
            MARK: marker,
            "RAY_AUTH_MODE": "disabled",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    gcs, dashboard = free_port(), free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 - the head's lifetime
    head = subprocess.Popen(
        [Path(sys.executable).with_name("ray"), "start", "--head", "--block"]
        + [f"{k}={v}" for k, v in ports.items()]
        + ["--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--num-cpus=2"]
        + ['--resources={"trial_driver": 8}', f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                jobs.client(address).list_jobs()
                break
            except Exception:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(temp) / "head.log").read_text()[-3000:]) from None
                time.sleep(1)
        yield Head(f"127.0.0.1:{gcs}", address)
    finally:
        for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            for pid in _marked(marker):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while _marked(marker) and time.monotonic() < deadline:
                time.sleep(0.2)
        head.wait(timeout=10)
        log.close()
        assert not _marked(marker), "the Ray head left processes behind"


@pytest.fixture
def jobs_env(ray_head, s3_server, monkeypatch) -> str:
    """The flow's environment for jobs mode; returns the secret it must never print."""
    secret = f"ede-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto takes any
    monkeypatch.setenv(jobs.SUBMIT_ENV, "jobs")
    monkeypatch.setenv(jobs.ADDRESS_ENV, ray_head.jobs)
    monkeypatch.setenv("RAY_ADDRESS", ray_head.gcs)  # the flow's other steps join the head
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    return secret


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_retrain_runs_its_training_as_a_ray_job(
    prefect_harness, jobs_env, ray_head, s3_bucket, write_anomaly_table
):
    """The job trains, the flow follows it (its logs in the task's log), exports what it
    wrote and promotes; the AWS variables reached the job only through its runtime
    environment, and the secret is in no entrypoint and no log line."""
    from flows.retrain import retrain

    data = write_anomaly_table(f"{s3_bucket}/in/table.parquet", n_normal=600, n_anomaly=40)
    lines = Lines()
    logging.getLogger("prefect").addHandler(lines)
    try:
        summary = retrain(data_url=data, storage_url=s3_bucket, **SMALL, refit=False)
    finally:
        logging.getLogger("prefect").removeHandler(lines)
    assert summary["promoted"], summary
    version = summary["version"]
    client = jobs.client(ray_head.jobs)
    job = client.get_job_info(f"ede-train-{version}")
    assert job.status.value == "SUCCEEDED"
    assert job.entrypoint.startswith("ede train-run --prepared s3://")
    assert job.entrypoint.endswith("--no-refit")
    assert set(job.runtime_env["env_vars"]) >= {"AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    logs = client.get_job_logs(job.submission_id)
    result = f"{s3_bucket}/runs/{version}/training-job.json"
    assert f"result: {result}" in logs  # the job's own summary line ...
    assert any(f"result: {result}" in line for line in lines.lines)  # ... in the flow's log
    assert any("environment passed: AWS_ACCESS_KEY_ID" in line for line in lines.lines)
    assert all(jobs_env not in text for text in [job.entrypoint, logs, *lines.lines])


def test_the_jobs_address_is_used_as_given_whatever_ray_address_says(ray_head, monkeypatch):
    """Ray's Jobs client prefers RAY_ADDRESS to the address it is given, and resolves a
    HOST:PORT there through a GCS connection that it makes this process's Ray key-value
    client: a flow joining the head (RAY_ADDRESS) would have left every later Ray call of
    its process talking to that head, and failing once the head is gone."""
    import ray.experimental.internal_kv as kv

    before = kv.global_gcs_client  # None, or the session Ray's when a test started it
    monkeypatch.setenv("RAY_ADDRESS", ray_head.gcs)
    monkeypatch.delenv(jobs.API_SERVER_ENV, raising=False)
    jobs.client(ray_head.jobs).list_jobs()
    assert kv.global_gcs_client is before
    assert jobs.API_SERVER_ENV not in os.environ  # pinned for the construction only
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    assert isinstance(jobs.client(ray_head.jobs).list_jobs(), list)


def test_a_failed_job_fails_with_its_last_error_line_and_masks_secrets(ray_head, tmp_path):
    """The job prints its secret (as a careless library might), then fails as ede fails:
    one line on stderr. The error carries that line; no line passed on shows the secret."""
    secret = f"ede-secret-{uuid.uuid4().hex}"
    args = ["train-run", "--prepared", str(tmp_path / "nope"), "--storage", str(tmp_path)]
    code = (
        "import os, sys; print('key', os.environ['AWS_SECRET_ACCESS_KEY'], flush=True); "
        f"from ede.cli import main; sys.exit(main({[*args, '--version', 'v1']!r}))"
    )
    lines = []
    with pytest.raises(jobs.JobFailed, match=r"FAILED: ede train-run: error: .*nope") as failed:
        jobs.run(
            ray_head.jobs,
            [sys.executable, "-c", code],
            submission_id=f"ede-test-{uuid.uuid4().hex}",
            log=lines.append,
            env={"AWS_SECRET_ACCESS_KEY": secret},
            poll_s=0.5,
        )
    assert "key ***" in lines
    assert all(secret not in line for line in [*lines, str(failed.value)])


def test_the_mode_is_configuration(monkeypatch):
    monkeypatch.delenv(jobs.SUBMIT_ENV, raising=False)
    assert jobs.jobs_address() is None  # join RAY_ADDRESS, else a local Ray
    monkeypatch.setenv(jobs.SUBMIT_ENV, "direct")
    assert jobs.jobs_address() is None
    monkeypatch.setenv(jobs.SUBMIT_ENV, "jobs")
    monkeypatch.delenv(jobs.ADDRESS_ENV, raising=False)
    with pytest.raises(ValueError, match="EDE_RAY_SUBMIT=jobs needs RAY_JOBS_ADDRESS"):
        jobs.jobs_address()
    monkeypatch.setenv(jobs.ADDRESS_ENV, "http://head:8265/")
    assert jobs.jobs_address() == "http://head:8265"
    assert jobs.jobs_address("http://other:8265") == "http://other:8265"  # the flow parameter
    with pytest.raises(ValueError, match="a Ray Jobs address is http"):
        jobs.jobs_address("head:6379")
    monkeypatch.setenv(jobs.SUBMIT_ENV, "ray-client")
    with pytest.raises(ValueError, match="expected 'jobs' or 'direct'"):
        jobs.jobs_address()


def test_a_jobs_address_in_ray_address_is_named_not_joined(monkeypatch):
    import ray

    from ede.distributed import cluster

    up = ray.is_initialized()  # the session's Ray, when an earlier test started it
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    with pytest.raises(ValueError, match="RAY_ADDRESS=http://head:8265: that is a Ray Jobs"):
        cluster.connect()
    assert ray.is_initialized() == up  # nothing joined, started or shut down


def test_a_cancelled_flow_run_stops_its_job(
    prefect_harness, jobs_env, ray_head, s3_bucket, write_anomaly_table
):
    """What a Prefect worker does to cancel a run (SIGTERM to the flow's process) reaches
    the task following the job, which stops it: the job ends STOPPED, not orphaned."""
    from prefect.settings import PREFECT_API_URL

    data = write_anomaly_table(f"{s3_bucket}/in/table.parquet", n_normal=600, n_anomaly=40)
    params = {**SMALL, "epochs": 10_000, "data_url": data, "storage_url": s3_bucket}
    code = f"from flows.retrain import retrain; retrain(**{params!r})"
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    before = {j.submission_id for j in jobs.client(ray_head.jobs).list_jobs()}
    flow = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    client = jobs.client(ray_head.jobs)
    try:
        job_id = _running_job(client, before, flow)
        time.sleep(3)  # training, not starting
        flow.send_signal(signal.SIGTERM)
        out, _ = flow.communicate(timeout=240)  # stop, hooks and Ray's shutdown, on a busy box
    finally:
        if flow.poll() is None:
            flow.kill()
    deadline = time.monotonic() + 60  # the flow waited for the stop; Ray may still record it
    while (status := client.get_job_status(job_id).value) not in jobs.TERMINAL:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == "STOPPED", f"{status}: {out.decode()[-3000:]}"
    assert flow.returncode != 0
    assert f"stopping Ray job {job_id}" in out.decode()
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.glob(f"{s3_bucket.removeprefix('s3://')}/runs/*/training-job.json")


def _running_job(client, before: set[str], flow: subprocess.Popen) -> str:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        for job in client.list_jobs():
            sid = job.submission_id or ""  # None: a driver that joined (the flow's own)
            if sid.startswith("ede-train-") and sid not in before and job.status.value == "RUNNING":
                return sid
        if flow.poll() is not None:
            raise AssertionError(flow.stdout.read().decode()[-3000:])
        time.sleep(1)
    raise AssertionError("no job started")
