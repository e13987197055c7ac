"""`ede score`: streams tables through the exported graph; restartable; bad input writes nothing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ede import ESAD
from ede.cli import main
from ede.export.artifact import MODEL_FILE
from ede.export.exporter import export
from ede.scoring.batch import score

FEATURES = ["a", "b", "c", "d"]


def frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    df.loc[:9, ["a", "b"]] += 5
    df["label"] = (np.arange(n) < 10).astype(int)
    df.insert(0, "id", np.arange(n) + 1000 * seed)
    return df


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(artifact folder, fitted ESAD): a tiny net, exported once for the module."""
    df = frame(400)
    det = ESAD(epochs=2, min_steps=None, hidden=(16, 8), latent_dim=4, seed=0)
    det.fit(df[FEATURES], df["label"])
    out = tmp_path_factory.mktemp("artifact")
    export(det, str(out), df[FEATURES].to_numpy()[:150], df["label"].to_numpy()[:150])
    return out, det


def score_cli(model_dir, inp, out, *extra):
    return main(
        ["score", "--model", str(model_dir), "--input", str(inp), "--output", str(out), *extra]
    )


def test_scores_files_folder_and_csv_with_ids_passed_through(model, tmp_path, capsys):
    art, det = model
    inp = tmp_path / "in"
    inp.mkdir()
    frames = {f"part{k}": frame(300, seed=k) for k in range(3)}
    frames["part0"].to_parquet(inp / "part0.parquet", index=False)
    frames["part1"][["d", "id", "c", "b", "a"]].to_csv(inp / "part1.csv", index=False)  # any order
    frames["part2"].to_parquet(inp / "part2.parquet", index=False, row_group_size=64)
    (inp / "_SUCCESS").write_text("")  # markers and hidden files are not inputs
    assert score_cli(art, inp, tmp_path / "out", "--batch-size", "100") == 0
    captured = capsys.readouterr()
    assert "scored 3 file(s), 900 rows" in captured.out and "rows/s" in captured.out
    assert captured.err.count("\n") == 1 and "passed through: ['id', 'label']" in captured.err
    for name, df in frames.items():
        got = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        assert list(got.columns[-2:]) == ["score", "is_anomaly"]
        assert got["id"].tolist() == df["id"].tolist()
        want = det.decision_function(df[FEATURES].to_numpy(np.float32))
        assert np.allclose(got["score"], want, rtol=1e-4)
        assert got["score"].dtype == np.float32 and got["is_anomaly"].dtype == bool
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part0.parquet",
        "part1.parquet",
        "part2.parquet",
    ]


def test_score_from_and_to_s3(model, s3_bucket, capsys):
    import s3fs

    art, det = model
    fs = s3fs.S3FileSystem()
    fs.put(f"{art}/", f"{s3_bucket}/model/", recursive=True)
    df = frame(500, seed=3)
    df.to_parquet(f"{s3_bucket}/in/2026/day.parquet", index=False)
    args = ["--id-columns", "id", "--batch-size", "128"]
    assert score_cli(f"{s3_bucket}/model", f"{s3_bucket}/in/", f"{s3_bucket}/out", *args) == 0
    assert "scored 1 file(s), 500 rows" in capsys.readouterr().out
    got = pd.read_parquet(f"{s3_bucket}/out/day.parquet")
    assert list(got.columns) == ["id", "score", "is_anomaly"]
    assert np.allclose(got["score"], det.decision_function(df[FEATURES].to_numpy()), rtol=1e-4)
    assert score_cli(f"{s3_bucket}/model", f"{s3_bucket}/in/*.parquet", f"{s3_bucket}/out") == 2
    assert "no .parquet or .csv files" in capsys.readouterr().err  # glob is not recursive
    assert score_cli(f"{s3_bucket}/model", f"{s3_bucket}/in/**/*.parquet", f"{s3_bucket}/out") == 0
    assert "skipped 1 existing output(s)" in capsys.readouterr().out
    fs.invalidate_cache()
    assert fs.ls(f"{s3_bucket}/out") == [f"{s3_bucket[5:]}/out/day.parquet"]


CRASH = r"""
import os, signal, sys

class NoTorch:  # scoring must not need torch
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked here")

sys.meta_path.insert(0, NoTorch())
from ede.scoring.batch import score  # ede/__init__ is lazy: no torch on this path

def crash(index, rows, committed):  # mid-way through the second file's writing
    if index == 1 and not committed:
        os.kill(os.getpid(), signal.SIGKILL)

score(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=250, progress=crash)
"""


def test_killed_run_resumes_to_identical_outputs(model, tmp_path):
    art, _ = model
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(3):
        frame(1000, seed=k).to_parquet(inp / f"f{k}.parquet", index=False)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    score(str(art), str(inp), str(whole), batch_size=250)
    args = [sys.executable, "-c", CRASH, str(art), str(inp), str(resumed)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    left = sorted(p.name for p in resumed.iterdir())  # f0 committed, f1 half-written
    assert len(left) == 2 and left[0].startswith("_ede-tmp-f1.") and left[1] == "f0.parquet"
    summary = score(str(art), str(inp), str(resumed), batch_size=250)
    assert (summary.files, summary.skipped, summary.rows) == (2, 1, 2000)
    assert sorted(p.name for p in resumed.iterdir()) == ["f0.parquet", "f1.parquet", "f2.parquet"]
    for k in range(3):
        a, b = whole / f"f{k}.parquet", resumed / f"f{k}.parquet"
        assert pq.read_table(a).equals(pq.read_table(b)) and a.read_bytes() == b.read_bytes()


def _write(df, path: Path):
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


def _missing(df):
    return df.drop(columns=["c"])


def _text(df):
    return df.assign(c=df["c"].map(lambda v: f"{v:.3f}").astype(object))


def _nan(df):
    df.loc[5, "c"] = np.nan
    return df


def _inf(df):
    df.loc[40, "d"] = np.inf  # in the third batch: the first two were already written
    return df


@pytest.mark.parametrize(
    "name,make,expected",
    [
        ("missing.parquet", _missing, ["missing", "['c']"]),
        ("text.parquet", _text, ["'c'", "not numeric", "string"]),
        ("text.csv", lambda df: df.assign(c="x"), ["'c'", "not numeric"]),
        ("nan.parquet", _nan, ["'c'", "NaN", "row 5"]),
        ("inf.csv", _inf, ["'d'", "inf", "row 40"]),
        ("empty.parquet", lambda df: df.iloc[:0], ["empty", "0 rows"]),
    ],
)
def test_bad_table_is_one_line_and_writes_nothing(model, tmp_path, capsys, name, make, expected):
    art, _ = model
    _write(make(frame(50)), tmp_path / name)
    assert score_cli(art, tmp_path / name, tmp_path / "out", "--batch-size", "16") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0], err
    for fragment in expected:
        assert fragment in err[0], err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("corrupt.parquet", b"PAR1 this is not parquet at all", "cannot read as parquet"),
        ("blank.csv", b"", "file is empty (0 bytes)"),
        ("header.csv", b"id,a,b,c,d\n", "empty (0 rows)"),
    ],
)
def test_unreadable_or_empty_file(model, tmp_path, capsys, name, content, expected):
    (tmp_path / name).write_bytes(content)
    assert score_cli(model[0], tmp_path / name, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_one_bad_file_among_good_ones_writes_nothing(model, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    frame(50).to_parquet(inp / "a.parquet")
    _missing(frame(50)).to_parquet(inp / "b.parquet")  # schema checked before any output
    assert score_cli(model[0], inp, tmp_path / "out") == 2
    assert "b.parquet" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_extra_columns_are_ignored_and_said_once(model, tmp_path, capsys):
    df = frame(40).assign(note="x", weight=1.5)
    df.to_parquet(tmp_path / "x.parquet")
    assert score_cli(model[0], tmp_path / "x.parquet", tmp_path / "out", "--id-columns", "id") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ede score: note: column(s) not used by the model, ignored: ['label', 'note', 'weight']"
    ]
    assert list(pd.read_parquet(tmp_path / "out" / "x.parquet").columns) == [
        "id",
        "score",
        "is_anomaly",
    ]


def test_model_changed_after_export_is_refused(model, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(model[0], art)
    with open(art / MODEL_FILE, "ab") as f:
        f.write(b"\0")
    frame(20).to_parquet(tmp_path / "x.parquet")
    assert score_cli(art, tmp_path / "x.parquet", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.onnx" in err[0] and "sha256" in err[0]
    assert not (tmp_path / "out").exists()


def test_output_onto_its_input_is_refused(model, tmp_path, capsys):
    frame(20).to_parquet(tmp_path / "x.parquet")
    assert score_cli(model[0], tmp_path / "x.parquet", tmp_path, "--overwrite") == 2
    assert "would overwrite this input" in capsys.readouterr().err
    assert os.path.getsize(tmp_path / "x.parquet") > 0


def test_bench_score_smoke(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", "score", "--json", str(report), "--rows", "12288"]) == 0
    got = json.loads(report.read_text())
    engines = {"torch_eager", "onnxruntime_fp32", "onnxruntime_int8", "numpy_roofline"}
    assert set(got["throughput"]) == engines
    assert all(v["rows_per_s"] > 0 for v in got["throughput"].values())
    assert got["roofline_max_abs_diff_vs_torch"] < 1e-3  # the roofline computes the same thing
    for key in ("fp32_vs_torch", "fp32_vs_roofline", "end_to_end_vs_read", "rss_10x_vs_1x"):
        assert got["ratios"][key] > 0
    assert got["end_to_end"]["rows"] == 12288 and got["memory"]["rows_10x"] == 12280
    assert 0 < got["int8"]["size_ratio"] < 1 and got["config"]["threads"] == 1
    assert "(b) onnxruntime fp32" in capsys.readouterr().out
