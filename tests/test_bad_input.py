"""The bad-input matrix: every (command, case) that makes sense, one line, nothing written.

Commands: `ede train` (the bad input is --data), `ede export` (--validation, or the
--model folder), `ede score` (--input, or the --model artifact) and the retrain flow
(`data_url`). For each: a non-zero exit (the flow: the library's exception), exactly
one line on stderr (the flow: a one-line message), naming the file, column, value or
URL at fault, and nothing written at the output (train: the model folder; export:
the artifact folder; score: the output prefix; the flow: nothing under
`<storage>/models/`).

Cases left out, and why:

- extra column, score: not an error. A column the model does not use is passed
  through (or, with --id-columns, ignored) and noted once (tests/test_scoring.py).
  Export: --validation rows are read by the model's feature names, so an extra
  column is not read at all. Train and the flow: an extra *numeric* column is a
  feature by contract, so the case there is an extra non-numeric column.
- missing column, train: training takes every numeric column, so no feature can be
  missing; what can be is a declared --id-columns column, and that is the case.
  The flow has no declared columns (a champion's schema only decides promotion).
- renamed label, score: the label is not an input of the model, so `target` in place
  of `label` is passed through like any other column.
- labels outside {0, 1}, score: the label is not read. NaN, inf and labels outside
  {0, 1} in the flow: values are checked in ingest's first pass, on Ray (the flow's
  `check` task reads schemas only); they fail by the same rule as train's
  (`ede.data.batches`, tests/test_prepare.py), so the matrix keeps the flow to the
  cases that fail before Ray starts, and asserts that Ray did not start.
- wrong image shape: where an image model exists, i.e. score (a conv artifact) and
  export (a conv model folder, --validation of the wrong size); `ede train` and the
  flow read tables only.
- tampered ONNX: score (model.onnx is what it loads); tampered weights: export
  (weights.pt is what it loads). Train and the flow load no model.
- storage (missing bucket, refused credentials, endpoint down): on the side each
  command reads: train's --data, export's --model, score's --input (pyarrow's native
  S3 filesystem) and the flow's `data_url`. Writes to a missing bucket are covered by
  tests/test_storage.py.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ede.cli import main

FEATURES = ["a", "b", "c", "d"]
MISSING_BUCKET = "ede-no-such-bucket"


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    df.loc[:11, ["a", "b"]] += 4
    df["label"] = (np.arange(n) < 12).astype(np.int64)
    return df


# ----------------------------------------------------------------------------- model fixtures


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    """`ede train` then `ede export` on a good table: root/model and root/onnx."""
    root = tmp_path_factory.mktemp("mlp")
    frame(300).to_parquet(root / "train.parquet")
    args = ["train", "--data", str(root / "train.parquet"), "--out", str(root / "model")]
    assert main([*args, "--epochs", "1"]) == 0
    assert main(["export", "--model", str(root / "model"), "--out", str(root / "onnx")]) == 0
    return root


@pytest.fixture(scope="module")
def conv(tmp_path_factory) -> Path:
    """A tiny conv ESAD on 8x8 images: root/model (a model folder with validation rows)
    and root/onnx (its export)."""
    from ede import ESAD
    from ede.export.exporter import export_folder
    from ede.export.model_folder import write_model_folder

    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 1, 8, 8)).astype(np.float32)
    y = (np.arange(160) < 8).astype(np.int64)
    X[:8] += 3
    det = ESAD(epochs=1, min_steps=None, conv_channels=(4, 8), latent_dim=4, seed=0)
    det.fit(X[8:120])
    root = tmp_path_factory.mktemp("conv")
    X_val, y_val = np.concatenate([X[:8], X[120:]]), np.concatenate([y[:8], y[120:]])
    write_model_folder(det, str(root / "model"), X_val, y_val, feature_names=[])
    export_folder(str(root / "model"), str(root / "onnx"))
    return root


# ----------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Bad:
    """The faulty URL (or folder) and what the one line must name."""

    url: str
    names: tuple[str, ...]


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def _images(n: int, side: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    flat = rng.normal(size=(n, side * side)).astype(np.float32)
    return pd.DataFrame({"image": list(flat), "label": (np.arange(n) < 2).astype(np.int64)})


def data_case(case: str, command: str, tmp: Path) -> Bad:
    """A bad table in `tmp`, as `command` meets it."""
    df = frame(60)
    if case == "missing-column":
        if command == "train":  # a declared id column that is absent
            return Bad(str(_write(df, tmp / "ids.parquet")), ("ids.parquet", "'row_id'"))
        return Bad(str(_write(df.drop(columns="c"), tmp / "missing.parquet")), ("'c'",))
    if case == "extra-column":  # non-numeric: a numeric one is a feature by contract
        return Bad(str(_write(df.assign(note="x"), tmp / "extra.parquet")), ("'note'",))
    if case == "renamed-label":
        renamed = df.rename(columns={"label": "target"})
        return Bad(str(_write(renamed, tmp / "renamed.parquet")), ("'label'", "--no-label"))
    if case == "non-numeric":
        text = df.assign(c=df["c"].map(lambda v: f"{v:.3f}"))
        return Bad(str(_write(text, tmp / "text.parquet")), ("'c'", "not numeric"))
    if case == "nan":
        df.loc[5, "c"] = np.nan
        return Bad(str(_write(df, tmp / "nan.parquet")), ("'c'", "NaN"))
    if case == "inf":
        df.loc[40, "d"] = np.inf
        return Bad(str(_write(df, tmp / "inf.csv")), ("'d'", "inf"))
    if case == "empty-file":
        (tmp / "empty.parquet").write_bytes(b"")
        return Bad(str(tmp / "empty.parquet"), ("empty",))
    if case == "header-only":
        (tmp / "header.csv").write_text(",".join([*FEATURES, "label"]) + "\n")
        return Bad(str(tmp / "header.csv"), ("0 rows",))
    if case == "corrupt-parquet":
        (tmp / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
        return Bad(str(tmp / "corrupt.parquet"), ("parquet",))
    if case == "ragged-csv":
        text = _write(df, tmp / "ragged.csv").read_text().splitlines()
        text[3] += ",9.5"  # data line 3: one field too many
        (tmp / "ragged.csv").write_text("\n".join(text) + "\n")
        return Bad(str(tmp / "ragged.csv"), ("csv",))
    if case == "labels-outside":
        df.loc[7, "label"] = 2
        return Bad(str(_write(df, tmp / "labels.parquet")), ("'label'", "[2]"))
    if case == "wrong-image-shape":  # 7x7 images for an 8x8 model
        return Bad(str(_write(_images(20, 7), tmp / "small.parquet")), ("'image'",))
    raise AssertionError(case)


def tampered(case: str, model: Path, tmp: Path) -> Bad:
    """A copy of `model` with one byte of its graph or weights flipped."""
    name = {"tampered-onnx": "model.onnx", "tampered-weights": "weights.pt"}[case]
    copy = tmp / "tampered"
    shutil.copytree(model, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    return Bad(str(copy), (f"{copy}/{name}", "sha256"))


STORAGE = ("missing-bucket", "refused-credentials", "endpoint-down")
CAUSES = {
    "missing-bucket": "bucket",
    "refused-credentials": "access denied",
    "endpoint-down": "endpoint unreachable",
}
DATA = (
    "missing-column",
    "extra-column",
    "renamed-label",
    "non-numeric",
    "nan",
    "inf",
    "empty-file",
    "header-only",
    "corrupt-parquet",
    "ragged-csv",
    "labels-outside",
)
MATRIX = {
    "train": [c for c in DATA if c != "missing-column"] + ["missing-column", *STORAGE],
    "export": [
        *(c for c in DATA if c != "extra-column"),
        "wrong-image-shape",
        "tampered-weights",
        *STORAGE,
    ],
    "score": [
        *(c for c in DATA if c not in ("extra-column", "renamed-label", "labels-outside")),
        "wrong-image-shape",
        "tampered-onnx",
        *STORAGE,
    ],
}
FLOW = [
    "extra-column",
    "renamed-label",
    "non-numeric",
    "empty-file",
    "header-only",
    "corrupt-parquet",
    "ragged-csv",
    *STORAGE,
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def storage(request, monkeypatch):
    """A function: the S3 environment a storage case needs, set for this test."""
    import s3fs

    def setup(case: str) -> None:
        if case == "missing-bucket":
            request.getfixturevalue("s3_server")
        elif case == "refused-credentials":
            monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("refusing_s3"))
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONG")
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
            monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        else:
            request.getfixturevalue("s3_server")  # credentials set; the endpoint is not there
            monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # seconds, not minutes
            monkeypatch.setenv("AWS_RETRY_MODE", "standard")
        s3fs.S3FileSystem.clear_instance_cache()

    yield setup
    s3fs.S3FileSystem.clear_instance_cache()


def storage_case(case: str, setup, suffix: str) -> Bad:
    setup(case)
    bucket = MISSING_BUCKET if case == "missing-bucket" else "ede-matrix"
    url = f"s3://{bucket}/in/{suffix}"
    return Bad(url, (url, CAUSES[case]))


# ----------------------------------------------------------------------------- the CLI


def cli_case(command: str, case: str, tmp: Path, request, storage) -> tuple[list[str], Bad, Path]:
    """(argv, the fault, the output that must stay unwritten)."""
    out = tmp / "out"
    image = case == "wrong-image-shape"
    if case in STORAGE:
        suffix = {"train": "train.parquet", "export": "model", "score": "x.parquet"}[command]
        bad = storage_case(case, storage, suffix)
    elif case.startswith("tampered"):
        root = request.getfixturevalue("mlp")
        bad = tampered(case, root / ("onnx" if command == "score" else "model"), tmp)
    else:
        bad = data_case(case, command, tmp)
    if command == "train":
        argv = ["train", "--data", bad.url, "--out", str(out), "--epochs", "1"]
        if case == "missing-column":
            argv += ["--id-columns", "row_id"]
    else:
        root = request.getfixturevalue("conv" if image else "mlp")
        if command == "export":
            if case in STORAGE or case.startswith("tampered"):
                argv = ["export", "--model", bad.url, "--out", str(out)]
            else:
                argv = ["export", "--model", str(root / "model"), "--out", str(out)]
                argv += ["--validation", bad.url]
        else:
            model = bad.url if case.startswith("tampered") else str(root / "onnx")
            data = str(tmp / "ok.parquet") if case.startswith("tampered") else bad.url
            if case.startswith("tampered"):
                frame(20).to_parquet(data)
            argv = ["score", "--model", model, "--input", data, "--output", str(out)]
    return argv, bad, out


PAIRS = [
    pytest.param(cmd, case, id=f"{cmd}-{case}") for cmd, cases in MATRIX.items() for case in cases
]


@pytest.mark.parametrize("command,case", PAIRS)
def test_cli(command, case, tmp_path, capsys, request, storage):
    argv, bad, out = cli_case(command, case, tmp_path, request, storage)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0, err
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(f"ede {command}: error: "), line
    where = bad.url if "://" in bad.url else Path(bad.url).name
    for fragment in (where, *bad.names):
        assert fragment in line, (fragment, line)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


# ----------------------------------------------------------------------------- the flow


@pytest.mark.parametrize("case", [pytest.param(c, id=f"flow-{c}") for c in FLOW])
def test_flow(case, tmp_path, request, storage, monkeypatch):
    """Every flow case fails in the `check` task, before Ray starts."""
    from ede.distributed import cluster
    from flows.retrain import retrain

    request.getfixturevalue("prefect_harness")

    def no_ray(**kwargs):
        raise AssertionError("Ray was started before the data were checked")

    monkeypatch.setattr(cluster, "connect", no_ray)
    if case == "endpoint-down":  # a transient fault, retried with backoff: once is enough here
        import flows.retrain

        monkeypatch.setattr(flows.retrain, "check", flows.retrain.check.with_options(retries=0))
    bad = storage_case(case, storage, "train.parquet") if case in STORAGE else None
    bad = bad or data_case(case, "flow", tmp_path)
    store = tmp_path / "store"
    with pytest.raises(Exception) as got:  # noqa: PT011 - the library's own type, any
        retrain(data_url=bad.url, storage_url=str(store), trials=0, epochs=1)
    message = str(got.value)
    assert len(message.splitlines()) == 1, message
    for fragment in (bad.url if "://" in bad.url else Path(bad.url).name, *bad.names):
        assert fragment in message, (fragment, message)
    models = store / "models"
    assert not models.exists() or not any(models.rglob("*"))


# ----------------------------------------------------------------------------- pyarrow's S3


def test_pyarrow_s3_refusal_is_one_line_naming_the_url(storage):
    """`ede score` and ingest read through pyarrow's native S3 filesystem, which raises a
    plain OSError ("AWS Error ACCESS_DENIED during HeadObject operation: ..."): the same
    one line as botocore's refusals, from the reader that meets it."""
    from ede.data.listing import arrow_fs
    from ede.scoring.inputs import inspect

    storage("refused-credentials")
    url = "s3://ede-matrix/in/x.parquet"
    afs, path, _ = arrow_fs(url)
    with pytest.raises(PermissionError) as got:
        inspect(afs, path, url, "parquet")
    line = str(got.value)
    assert len(line.splitlines()) == 1 and line.startswith(f"{url}: cannot read: access denied")
    assert "ACCESS_DENIED" in line


@pytest.mark.parametrize(
    "message,kind,cause",
    [
        (
            "When reading information for key 'x.parquet' in bucket 'b': AWS Error "
            "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect "
            "to server; Details: Failed to connect to 127.0.0.1:1 after 0 ms",
            ConnectionError,
            "endpoint unreachable",
        ),
        (
            "When listing objects under key 'in' in bucket 'b': AWS Error NO_SUCH_BUCKET "
            "during ListObjectsV2 operation: The specified bucket does not exist",
            FileNotFoundError,
            "bucket missing",
        ),
    ],
)
def test_pyarrow_s3_errors_map_to_storage_errors(message, kind, cause):
    """pyarrow's own retries make a real endpoint-down read take ~12 s, so the mapping is
    checked on messages in pyarrow 26's form (the first as it came from a closed port)."""
    from ede.storage import storage_error, transient

    failed = storage_error(OSError(message), "s3://b/in/x.parquet", "read")
    assert isinstance(failed, kind)
    assert str(failed).startswith(f"s3://b/in/x.parquet: cannot read: {cause} (When ")
    assert transient(OSError(message)) == (kind is ConnectionError)
