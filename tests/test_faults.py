"""Fault injection with real processes, a real local Ray and the real loopback S3 server.

The other tests check what ede does with a fault raised in Python (an exception from a
patched function, a crashing loop). These inject the fault where it happens in
production, from outside the code under test: the S3 endpoint goes away (moto's server
stopped from a timer thread and started again on the same port, moto's backends being
process-wide it comes back with its buckets and objects), a process is SIGKILLed in the
middle of writing (a model folder; a retrain between export and promote). Each test
states the fault and the guarantee that must hold after it; each also checks that its
fault really landed (a retry happened, the kill came before the commit), so a test that
missed its moment fails instead of passing for nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.serve import free_port

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- a stoppable S3


class StoppableS3:
    """moto's S3 server on a fixed port that a test stops and starts again; the objects
    survive (moto's backends live in the process, not in the server)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.events: list[tuple[str, float]] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.events.append(("up", time.monotonic()))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.events.append(("down", time.monotonic()))

    def outage(self, seconds: float) -> None:
        """Stop the server now; a thread starts it again `seconds` later."""
        self.stop()

        def restart() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=restart, daemon=True, name="s3-restart")
        thread.start()
        self.threads.append(thread)


@pytest.fixture
def stoppable_s3(monkeypatch) -> Iterator[StoppableS3]:
    """A `StoppableS3` the code under test reaches through AWS_* env; botocore retries once
    only, so an outage surfaces in seconds, not in botocore's own backoff."""
    import logging

    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    s3 = StoppableS3()
    s3.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield s3
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for thread in s3.threads:
            thread.join()
        s3.stop()


def _fs():
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.invalidate_cache()
    return fs


def _bucket(fs, name: str) -> str:
    """A fresh bucket (moto's state outlives the server: names must not repeat)."""
    name = f"{name}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(name)
    return f"s3://{name}"


def test_a_stopped_and_restarted_moto_server_keeps_its_objects(stoppable_s3):
    """The premise of the outage tests: a server stopped and started again on the same
    port serves the same buckets and objects, and refuses connections while down."""
    fs = _fs()
    bucket = _bucket(fs, "ede-fault-premise")
    fs.pipe(f"{bucket}/x", b"kept")
    stoppable_s3.stop()
    with pytest.raises(Exception) as down:
        _fs().cat(f"{bucket}/x")
    from ede.storage import transient

    assert transient(down.value)
    import pyarrow.fs as pafs

    from ede.storage import storage_error

    with pytest.raises(OSError) as arrow_down:  # pyarrow's native S3, scoring's reader
        pafs.FileSystem.from_uri(bucket)[0].get_file_info(f"{bucket[5:]}/x")
    assert transient(arrow_down.value), arrow_down.value
    assert "endpoint unreachable" in str(storage_error(arrow_down.value, bucket, "read"))
    stoppable_s3.start()
    assert _fs().cat(f"{bucket}/x") == b"kept"


# ----------------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, write_anomaly_table) -> str:
    """A tiny exported model for write_anomaly_table's columns (f0..f7, label)."""
    import pandas as pd

    from ede import ESAD
    from ede.export.exporter import export

    folder = tmp_path_factory.mktemp("faults-artifact")
    table = write_anomaly_table(str(folder / "train.parquet"), n_normal=400, n_anomaly=20)
    df = pd.read_parquet(table)
    X, y = df.drop(columns="label"), df["label"]
    det = ESAD(epochs=1, min_steps=None, hidden=(16, 8), latent_dim=4, seed=0).fit(X, y)
    out = folder / "artifact"
    export(det, str(out), X.to_numpy()[:200], y.to_numpy()[:200])
    return str(out)


def _score_inputs(fs, bucket: str, write, n_files: int, n_normal: int) -> dict[str, int]:
    """`n_files` tables under <bucket>/in -> {output name: rows}."""
    rows = {}
    for i in range(n_files):
        write(f"{bucket}/in/t{i}.parquet", n_normal=n_normal, n_anomaly=40)
        rows[f"t{i}.parquet"] = n_normal + 40
    return rows


def _check_outputs(fs, bucket: str, out: str, expected: dict[str, int]) -> dict:
    """Every committed output is whole (its input's rows, in order); the record lists
    exactly the committed files with their rows. Returns the record."""
    fs.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(out.removeprefix("s3://"), detail=False)}
    outputs = {n for n in names if not n.startswith("_")}
    record = json.loads(fs.cat_file(f"{out}/_ede-scored.json"))
    assert set(record["files"]) == outputs
    for name in outputs:
        with fs.open(f"{out}/{name}", "rb") as f:
            table = pq.read_table(f)
        with fs.open(f"{bucket}/in/{name}", "rb") as f:
            source = pq.read_table(f, columns=["label"])
        assert table.num_rows == expected[name] == record["files"][name]["rows"], name
        assert table["label"].equals(source["label"]), name
    return record


# Measured 28-36 s per case on the shared 2-core machine (plus the Prefect harness's start).
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("moment", ["moved", "recorded"])
def test_score_flow_survives_an_s3_outage_mid_run(
    stoppable_s3, artifact, write_anomaly_table, monkeypatch, moment
):
    """Fault: the S3 endpoint stops for 4 s while the score flow runs: just after the first
    output is moved into place ("moved": before its entry in the record is written) or
    once that entry is written ("recorded": the second output is being streamed).
    Guarantee: the score task fails with a transient error, Prefect retries it
    (STORAGE_RETRIES), the retry skips what the record lists and scores the rest; every
    output key holds a complete table and the record lists each of them."""
    import flows.score
    from flows.score import score

    fs = _fs()
    bucket = _bucket(fs, "ede-fault-score")
    expected = _score_inputs(fs, bucket, write_anomaly_table, n_files=4, n_normal=12000)
    out = f"{bucket}/out"
    attempts = []
    real = flows.score.score_tables

    def counted(*args, **kwargs):
        attempts.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.score, "score_tables", counted)

    # The moment is taken from inside the run (the record's hook, t0 only), the outage
    # itself is real: the server stops and every request is refused until it restarts.
    from ede.scoring.record import Record

    real_after = Record.after_commit

    def after_commit(self, name, source, rows, **drift):
        once = name == "t0.parquet" and not stoppable_s3.threads
        if once and moment == "moved":
            stoppable_s3.outage(4.0)  # down before this entry is written
        real_after(self, name, source, rows, **drift)
        if once and moment == "recorded":  # longer than pyarrow's own retries
            stoppable_s3.outage(8.0)  # down while t1 streams

    monkeypatch.setattr(Record, "after_commit", after_commit)
    result = score(
        input_url=f"{bucket}/in",
        output_url=out,
        storage_url=bucket,
        model_url=artifact,
        batch_size=1000,
        per_model=False,
    )
    down = next(t for e, t in stoppable_s3.events if e == "down")
    assert len(attempts) >= 2 and attempts[0] < down < attempts[-1]  # the fault landed mid-run
    if moment == "moved":  # t0 in place but unrecorded: scored again, not skipped
        assert result["rows"] == sum(expected.values())
    else:  # the retry skipped what the record lists
        assert result["rows"] == sum(expected.values()) - expected["t0.parquet"]
    record = _check_outputs(_fs(), bucket, out, expected)
    assert set(record["files"]) == set(expected)  # all four, each whole


def test_score_cli_with_the_endpoint_down_is_one_line_and_writes_nothing(
    stoppable_s3, artifact, write_anomaly_table, capsys
):
    """Fault: the S3 endpoint is down for the whole of `ede score`. Guarantee: one line on
    stderr naming the cause (no traceback), a non-zero exit, and once S3 is back nothing
    at the output prefix."""
    from ede.cli import main

    fs = _fs()
    bucket = _bucket(fs, "ede-fault-cli")
    _score_inputs(fs, bucket, write_anomaly_table, n_files=1, n_normal=500)
    stoppable_s3.stop()
    code = main(["score", "--model", artifact, "--input", f"{bucket}/in", "--output",
                 f"{bucket}/out"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    stoppable_s3.start()
    assert code != 0
    assert len(err.splitlines()) == 1 and "unreachable" in err, err
    assert not _fs().exists(f"{bucket}/out")


# ----------------------------------------------------------------------------- ingest


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("moment", ["start", "manifest"])
def test_ingest_task_survives_an_s3_outage(stoppable_s3, write_anomaly_table, monkeypatch, moment):
    """Fault: the S3 endpoint is down for 10 s when ingest starts ("start": listing the
    data), or stops just before the manifest is written ("manifest": the splits are in
    place). Guarantee: `prepare_splits` in a task with STORAGE_RETRIES (as the retrain
    flow's ingest) fails with a transient error, is retried and completes; meanwhile the
    prepared folder is unusable without its manifest (load_prepared refuses it), and
    afterwards it holds exactly train.parquet, test.parquet and manifest.json."""
    from prefect import flow, task

    import ede.data.ingest as ingest
    from ede.data.ingest import SplitSettings, load_prepared, prepare_splits
    from flows.io_retries import STORAGE_RETRIES

    fs = _fs()
    bucket = _bucket(fs, "ede-fault-ingest")
    data = write_anomaly_table(f"{bucket}/incoming/table.parquet")
    attempts, seen_without_manifest = [], []
    real_write = ingest.write_bytes_atomic

    def write_manifest(url, data):
        if moment == "manifest" and not stoppable_s3.threads:
            stoppable_s3.outage(3.0)
            seen_without_manifest.append(url.rsplit("/", 1)[0])
        real_write(url, data)

    monkeypatch.setattr(ingest, "write_bytes_atomic", write_manifest)

    refused = []

    @task(**STORAGE_RETRIES)
    def run_ingest() -> dict:
        attempts.append(time.monotonic())
        if seen_without_manifest and not refused:  # a retry: splits there, no manifest
            for thread in stoppable_s3.threads:
                thread.join()  # S3 back: what a reader would see now
            try:
                load_prepared(seen_without_manifest[0])
                refused.append(False)
            except FileNotFoundError as exc:
                refused.append("no prepared splits" in str(exc))
        return prepare_splits(data, bucket, SplitSettings()).to_dict()

    @flow
    def ingest_flow() -> dict:
        return run_ingest()

    if moment == "start":  # longer than s3fs's own retries
        stoppable_s3.outage(10.0)
    prepared = ingest_flow()
    assert len(attempts) >= 2  # the fault landed: the first attempt failed, a retry won
    assert refused == ([True] if moment == "manifest" else [])
    root = prepared["root"]
    fs = _fs()
    under = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket[5:]}/prepared"))
    assert under == ["manifest.json", "test.parquet", "train.parquet"]
    assert load_prepared(root).rows == prepared["rows"]


# ------------------------------------------------------------------------ a killed `ede train`


def _train_cmd(data: str, out: str, seed: int) -> list[str]:
    cli = "import sys; from ede.cli import main; sys.exit(main())"  # ede.cli has no __main__
    return [sys.executable, "-c", cli, "train", "--data", data, "--out", out,
            "--epochs", "1", "--seed", str(seed)]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _kill_when_writing(cmd: list[str], out: Path, delay: float) -> int:
    """Run `cmd`; SIGKILL it `delay` s after the first sign of writing under `out` (a new
    temporary or a file modified after the start). Returns the exit code."""
    start = time.time()
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None:
            with contextlib.suppress(FileNotFoundError):
                if any(".tmp-" in p.name or p.stat().st_mtime >= start for p in out.iterdir()):
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.0005)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Measured 139 s on the shared 2-core machine: 4-5 `ede train` processes of ~20-35 s each.
def test_ede_train_killed_while_writing_its_folder_never_exports_mixed_files(
    tmp_path, write_anomaly_table
):
    """Fault: `ede train --out F` SIGKILLed while it writes F, F already holding a complete
    model from an earlier run (another seed, so other weights): the worst case, new files
    over old ones. Guarantee: F is then the old model whole, the new model whole (both
    exportable), or refused by `ede export` with one line; never exported with mixed files.
    Each kill lands at another moment (delays after the first write is seen). The folder
    is a few small files, written in about a millisecond, so a kill can land after the
    last one (CI saw new, new, new once): up to three more kills at once follow, only
    until one has landed mid-write."""
    from ede.cli import main
    from ede.export.model_folder import read_model_folder

    data = write_anomaly_table(str(tmp_path / "t.parquet"), n_normal=400, n_anomaly=20)
    out = tmp_path / "model"
    subprocess.run(_train_cmd(data, str(out), 0), env=_env(), check=True, capture_output=True)
    old = read_model_folder(str(out)).det
    outcomes = []
    for i, delay in enumerate([0.0, 0.002, 0.01, 0.0, 0.0, 0.0]):
        if i >= 3 and ("refused" in outcomes or "old" in outcomes):
            break
        code = _kill_when_writing(_train_cmd(data, str(out), seed=1 + i), out, delay)
        try:
            folder = read_model_folder(str(out))
        except (ValueError, FileNotFoundError) as exc:
            assert len(str(exc).splitlines()) == 1, exc
            cli = main(["export", "--model", str(out), "--out", str(tmp_path / f"a{i}")])
            assert cli != 0 and not (tmp_path / f"a{i}").exists()  # refused, nothing written
            outcomes.append("refused")
        else:
            pairs = zip(folder.det.net_.parameters(), old.net_.parameters(), strict=True)
            same = all(np.array_equal(a.detach(), b.detach()) for a, b in pairs)
            assert main(["export", "--model", str(out), "--out", str(tmp_path / f"a{i}")]) == 0
            outcomes.append("old" if same else "new")
            old = folder.det
        assert code == -signal.SIGKILL or outcomes[-1] == "new", (code, outcomes)
        # the next try starts from a whole folder: retrain it when this one was refused
        if outcomes[-1] == "refused":
            subprocess.run(_train_cmd(data, str(out), 0), env=_env(), check=True,
                           capture_output=True)  # fmt: skip
            old = read_model_folder(str(out)).det
    print("kill outcomes:", outcomes)
    assert "refused" in outcomes or "old" in outcomes  # at least one kill landed mid-write


# ------------------------------------------------------------------------ a killed retrain flow


RETRAIN = (
    "import json, sys; from flows.retrain import retrain; "
    "s = retrain(data_url=sys.argv[1], storage_url=sys.argv[2], trials=0, epochs=1, "
    "batch_size=64, quantize_int8=False, min_rows=50); print(json.dumps(s['version']))"
)


# Measured 86 s on the shared 2-core machine: three retrain runs in subprocesses.
@pytest.mark.usefixtures("prefect_harness", "ray_cluster")
def test_retrain_killed_between_export_and_promote_leaves_a_whole_champion(
    tmp_path, write_anomaly_table
):
    """Fault: the retrain flow's process is SIGKILLed once its run's artifact is exported
    (runs/<version>/artifact/metadata.json complete), before the promotion, with a
    champion already there. Guarantee: the champion pointer still names a complete
    artifact (read_model checks its sha256), and a rerun of the flow completes. The
    kill may come after the promotion on a slow machine: the pointer must then name the
    new, complete artifact; the test says which it saw (the usual case: before)."""
    import ray
    from prefect.settings import PREFECT_API_URL

    from ede.export import registry
    from ede.export.artifact import read_model

    data = write_anomaly_table(str(tmp_path / "table.parquet"), n_normal=600, n_anomaly=40)
    store = tmp_path / "store"
    env = {
        **_env(),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    cmd = [sys.executable, "-c", RETRAIN, data, str(store)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    v1 = json.loads(first.stdout.strip().splitlines()[-1])
    models = str(store / "models")
    assert registry.read_champion(models, "ede")["version"] == v1

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    exported = None
    try:
        while proc.poll() is None and exported is None:
            for meta in (store / "runs").glob("*/artifact/metadata.json"):
                if meta.parts[-3] != v1:
                    exported = meta.parts[-3]
            time.sleep(0.01)
        if exported is not None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert exported is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    champion = registry.read_champion(models, "ede")
    before_promote = champion["version"] == v1
    print("kill landed", "before" if before_promote else "after", "the promotion")
    assert champion["version"] in (v1, exported)
    read_model(champion["url"])  # whole: every file's sha256 checked
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    champion = registry.read_champion(models, "ede")
    read_model(champion["url"])


# ------------------------------------------------------------------ a killed ede train on Ray


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children too)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


# Measured 99 s here (load 8): Ray's agents end about 80 s after their raylet is gone.
def test_ede_train_on_ray_sigkilled_leaves_no_ray_process_behind(tmp_path, write_anomaly_table):
    """Fault: `ede train --workers 1` (a local Ray: GCS, raylet, dashboard and runtime-env
    agents, workers) SIGKILLed mid-training. Every process it started ends by itself, the
    agents that outlive the raylet for a while included."""
    data = write_anomaly_table(str(tmp_path / "t.parquet"), n_normal=3000, n_anomaly=60)
    cmd = [*_train_cmd(data, str(tmp_path / "model"), 0), "--workers", "1"]
    cmd += ["--storage", str(tmp_path / "ray"), "--epochs", "400"]  # long enough to be killed
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, started = time.monotonic() + 240, set()
        while time.monotonic() < deadline and proc.poll() is None:
            started = _descendants(proc.pid)
            names = {Path(f"/proc/{p}/comm").read_text().strip() for p in started if _alive(p)}
            if any(n.startswith("ray::") for n in names) and (tmp_path / "ray").exists():
                break  # a worker trains: its checkpoints folder exists
            time.sleep(0.5)
        assert proc.poll() is None and started, proc.stderr.read()[-2000:]
        time.sleep(2)
        started |= _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and any(_alive(p) for p in started):
            time.sleep(1)
        left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in started if _alive(p)}
        assert not left, left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
