"""Shared fixtures: a real S3 API (moto's server on 127.0.0.1) and the shared ODDS data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before any test module imports numpy/torch: the suite shares its cores with benchmarks.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Prefect offline: no telemetry, a patient ephemeral server, and a home of the
# suite's own, so tests never touch the user's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="ede-test-prefect-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

REPO_ROOT = Path(__file__).resolve().parent.parent
ODDS_DIR = REPO_ROOT.parent / "shared" / "data" / "odds"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free local port; code under test finds it via AWS_* env."""
    import logging

    from moto.server import ThreadedMotoServer

    # werkzeug's request log ("HEAD /bucket/key 404") would land on the stderr of every
    # in-process command a test captures: the server's noise, not ede's output
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(name, raising=False)
            yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh, uniquely named bucket; yields ``s3://name``."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    name = f"ede-test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    yield f"s3://{name}"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Real flow runs against a temporary Prefect API and database (≈15 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture(scope="session")
def odds_dir() -> Path:
    """``../shared/data/odds`` next to the repo; absent in a fresh clone, so skip there."""
    if not ODDS_DIR.is_dir():
        pytest.skip("../shared/data/odds not present: ODDS tests need the shared data folder")
    return ODDS_DIR


@pytest.fixture(scope="session")
def ray_cluster(s3_server: str) -> Iterator[None]:
    """One local Ray for the session: 2 CPUs, and `trial_driver` units for Tune's trial drivers.

    Started after `s3_server` has set the AWS_* variables, so Ray's workers inherit them.
    """
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        # Ray Train's controller polls for reports every 2 s by default (ede's connect()
        # lowers it the same way); tiny test epochs would each wait for a poll.
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
        ray.init(  # the dashboard serves the State API Train V2's placement-group cleaner needs
            num_cpus=2,
            resources={"trial_driver": 8},
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
        )
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def write_anomaly_table():
    """A function writing a small shuffled Parquet table (labelled anomalies shifted by
    `shift`) in row groups of 250 rows to any fsspec URL; returns the URL."""
    import fsspec
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(
        url: str, n_normal: int = 1500, n_anomaly: int = 60, d: int = 8, shift: float = 3.0
    ) -> str:
        rng = np.random.default_rng(0)
        X = np.vstack([rng.normal(size=(n_normal, d)), rng.normal(shift, 1.0, (n_anomaly, d))])
        y = np.r_[np.zeros(n_normal, np.int64), np.ones(n_anomaly, np.int64)]
        order = rng.permutation(len(y))
        columns = {f"f{j}": X[order, j].astype(np.float32) for j in range(d)}
        table = pa.table({**columns, "label": y[order]})
        with fsspec.open(url, "wb") as f:
            pq.write_table(table, f, row_group_size=250)
        return url

    return write


@pytest.fixture(scope="session")
def refusing_s3() -> Iterator[str]:
    """A second moto server, in its IAM mode from the first request on: it knows no access
    key, so every request is refused as a real S3 refuses wrong credentials."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [Path(sys.executable).with_name("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
