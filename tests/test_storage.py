"""Storage faults as an operator meets them: no bucket made on the fly, and a missing
bucket, refused credentials, an endpoint that is down or no credentials at all are one
line naming the URL, from the real `ede` process against loopback S3 servers (moto's;
the refusing one in its IAM mode, which checks every request's access key)."""

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import s3fs

from ede.cli import main
from ede.storage import write_bytes_atomic

KEEP = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")  # the server, not who we are


def ede_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed `ede` console script in its own process, as a user runs it."""
    exe = Path(sys.executable).with_name("ede")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=300, env=env or dict(os.environ)
    )


def one_line(got: subprocess.CompletedProcess) -> str:
    err = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(err) == 1, got.stderr
    return err[0]


def bucket_exists(name: str) -> bool:
    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem().exists(name)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A table, the model folder `ede train` makes of it, and that folder's export."""
    root = tmp_path_factory.mktemp("local")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])
    df["label"] = (np.arange(300) < 10).astype(int)
    df.to_parquet(root / "train.parquet")
    args = ["train", "--data", str(root / "train.parquet"), "--out", str(root / "model")]
    assert main([*args, "--epochs", "1"]) == 0
    assert main(["export", "--model", str(root / "model"), "--out", str(root / "onnx")]) == 0
    return root


def commands(local: Path, bucket: str) -> dict[str, list[str]]:
    """Each command with its storage side in `bucket` (s3://name) and the rest local."""
    return {
        "train": ["train", "--data", str(local / "train.parquet"), "--out", f"{bucket}/model"]
        + ["--epochs", "1"],
        "export": ["export", "--model", str(local / "model"), "--out", f"{bucket}/onnx"],
        "score": ["score", "--model", f"{bucket}/onnx", "--input", str(local / "train.parquet")]
        + ["--output", str(local / "scored")],
    }


def test_a_write_never_creates_its_bucket(s3_server):
    name = f"ede-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(FileNotFoundError) as got:
        write_bytes_atomic(f"s3://{name}/x/y.json", b"{}")
    assert str(got.value) == (
        f"s3://{name}/x/y.json: bucket '{name}' does not exist (ede never creates buckets)"
    )
    assert not bucket_exists(name)


@pytest.mark.parametrize("command", ["train", "export"])
def test_an_output_bucket_that_is_missing_is_one_line_and_stays_missing(local, s3_server, command):
    name = f"ede-missing-{uuid.uuid4().hex[:8]}"
    line = one_line(ede_cli(*commands(local, f"s3://{name}")[command]))
    assert f"s3://{name}/" in line and f"bucket '{name}' does not exist" in line
    assert not bucket_exists(name)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["train", "export", "score"])
def test_an_endpoint_that_is_down_is_one_line(local, s3_server, command):
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    env.update(AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")  # seconds, not minutes
    line = one_line(ede_cli(*commands(local, "s3://ede-down")[command], env=env))
    assert "s3://ede-down/" in line and "endpoint unreachable" in line


@pytest.mark.parametrize("command", ["train", "export", "score"])
def test_no_credentials_at_all_is_one_line(local, s3_bucket, tmp_path, command):
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k in KEEP}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_CONFIG_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
    )
    line = one_line(ede_cli(*commands(local, s3_bucket)[command], env=env))
    assert f"{s3_bucket}/" in line and "no credentials" in line


@pytest.mark.parametrize("command", ["train", "export", "score"])
def test_refused_credentials_are_one_line_without_the_secret(local, refusing_s3, command):
    secret = f"fake-secret-{uuid.uuid4().hex}"
    env = {**os.environ, "AWS_ENDPOINT_URL": refusing_s3, "AWS_DEFAULT_REGION": "us-east-1"}
    env.update(AWS_ACCESS_KEY_ID="AKIAWRONG", AWS_SECRET_ACCESS_KEY=secret)
    env.pop("AWS_SESSION_TOKEN", None)
    got = ede_cli(*commands(local, "s3://ede-refused")[command], env=env)
    line = one_line(got)
    assert "s3://ede-refused/" in line and "access denied" in line
    assert secret not in got.stderr + got.stdout
