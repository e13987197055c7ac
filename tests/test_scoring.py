"""`ede score`: streams tables through the exported graph; restartable; bad input writes nothing."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ede import ESAD
from ede.cli import main
from ede.export.artifact import MODEL_FILE
from ede.export.exporter import export
from ede.scoring import pipeline as scoring_pipeline
from ede.scoring.batch import score
from ede.scoring.pipeline import STALE_TMP_S

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


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    """Another model for the same features (another seed): another graph, another sha256."""
    df = frame(400, seed=7)
    det = ESAD(epochs=2, min_steps=None, hidden=(16, 8), latent_dim=4, seed=1)
    det.fit(df[FEATURES], df["label"])
    out = tmp_path_factory.mktemp("artifact_b")
    export(det, str(out), df[FEATURES].to_numpy()[:150], df["label"].to_numpy()[:150])
    return out, det


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _record(folder) -> dict:
    return json.loads((Path(folder) / "_ede-scored.json").read_text())


def _sha(art) -> str:
    return json.loads((Path(art) / "metadata.json").read_text())["files"]["model.onnx"]["sha256"]


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
        group = pq.ParquetFile(tmp_path / "out" / f"{name}.parquet").metadata.row_group(0)
        encoded = {group.column(j).path_in_schema: group.column(j).has_dictionary_page
                   for j in range(group.num_columns)}  # fmt: skip
        assert not encoded["score"] and encoded["id"]  # ede.data.parquet_encoding
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_ede-drift.json",  # this run's drift, the prefix's history (ede.scoring.history)
        "_ede-scored.json",
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
    assert fs.ls(f"{s3_bucket}/out") == [
        f"{s3_bucket[5:]}/out/_ede-drift.json",
        f"{s3_bucket[5:]}/out/_ede-scored.json",
        f"{s3_bucket[5:]}/out/day.parquet",
    ]


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
    assert len(left) == 3 and left[0] == "_ede-scored.json" and left[2] == "f0.parquet"
    assert left[1].startswith("_ede-tmp-f1.")
    summary = score(str(art), str(inp), str(resumed), batch_size=250)
    assert (summary.files, summary.skipped, summary.rows) == (2, 1, 2000)
    # the killed run added no drift (it never finished); the resumed one did
    outputs = ["_ede-drift.json", "_ede-scored.json", "f0.parquet", "f1.parquet", "f2.parquet"]
    assert sorted(p.name for p in resumed.iterdir()) == sorted([left[1], *outputs])  # fresh: kept
    _age(resumed / left[1], STALE_TMP_S + 60)  # the leftover goes once stale
    assert score(str(art), str(inp), str(resumed)).skipped == 3
    assert sorted(p.name for p in resumed.iterdir()) == outputs
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


def test_bench_score_smoke(tmp_path, capsys, monkeypatch):
    from ede.bench import roofline

    monkeypatch.setattr(roofline, "BUDGET_S", 0.02)  # the limits' plumbing, not their values
    monkeypatch.setattr(roofline, "FP32_SIDE", 512)
    monkeypatch.setattr(roofline, "MAX_SIDE", 512)
    report = tmp_path / "bench.json"
    assert main(["bench", "score", "--json", str(report), "--rows", "12288"]) == 0
    got = json.loads(report.read_text())
    engines = {"torch_eager", "onnxruntime_fp32", "onnxruntime_int8", "numpy_chain"}
    assert set(got["throughput"]) == engines | {"onnxruntime_int8_static"}
    assert all(v["rows_per_s"] > 0 for v in got["throughput"].values())
    assert all(v["vs_fp32_gemm_peak"] > 0 for v in got["throughput"].values())
    assert all(v["gflops"] > 0 for v in got["peaks"]["kernels"].values())
    assert got["numpy_chain_max_abs_diff_vs_torch"] < 1e-3  # the chain computes the same thing
    for key in ("fp32_vs_torch", "fp32_vs_fp32_gemm_peak", "end_to_end_vs_read", "rss_10x_vs_1x"):
        assert got["ratios"][key] > 0
    assert got["end_to_end"]["rows"] == 12288 and got["memory"]["rows_10x"] == 12280
    assert set(got["quantised"]) == {"int8", "int8-static"} and got["config"]["threads"] == 1
    assert all(0 < q["size_ratio"] < 1 for q in got["quantised"].values())
    assert "QGemm" in got["op_profile"]["onnxruntime_int8_static"]["op_share"]
    assert "(b) onnxruntime fp32" in capsys.readouterr().out


def test_bench_score_s3_smoke(tmp_path, capsys):
    """--s3: `ede score` from the loopback S3 server at two sizes, in fresh processes."""
    report = tmp_path / "bench.json"
    assert main(["bench", "score", "--s3", "--json", str(report), "--rows", "20000"]) == 0
    got = json.loads(report.read_text())
    s3 = got["s3"]
    assert got["mode"] == "s3" and (s3["rows_10x"], s3["rows_1x"]) == (20000, 2000)
    assert s3["rows_per_s_10x"] > 0 and s3["rows_per_s_1x"] > 0
    assert s3["rss_10x_mb"] > 0 and s3["ratio"] > 0 and s3["batch_size"] == 65536
    assert "peak RSS 10x vs 1x" in capsys.readouterr().out


# ----------------------------------------------------------------------------- shared prefixes


def test_live_temporaries_of_another_run_survive_and_stale_ones_go(model, tmp_path):
    art, _ = model
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    frame(50).to_parquet(inp / "x.parquet")
    live = out / "_ede-tmp-x.0123456789abcdef0123456789abcdef"  # another run, writing x now
    stale = out / "_ede-tmp-y.fedcba9876543210fedcba9876543210"  # a dead run's, another stem
    live.write_bytes(b"PAR1 half written")
    stale.write_bytes(b"PAR1 left behind")
    _age(stale, STALE_TMP_S + 60)
    assert score(str(art), str(inp), str(out)).files == 1
    assert live.read_bytes() == b"PAR1 half written"
    assert not stale.exists()
    names = ["_ede-drift.json", "_ede-scored.json", live.name, "x.parquet"]
    assert sorted(p.name for p in out.iterdir()) == names


def test_stale_temporaries_on_s3_are_removed_live_ones_kept(model, s3_bucket, monkeypatch):
    """An S3 object's LastModified cannot be backdated: the threshold is what moves."""
    import s3fs

    art, _ = model
    fs = s3fs.S3FileSystem()
    frame(50).to_parquet(f"{s3_bucket}/in/x.parquet", index=False)
    left = f"{s3_bucket}/out/_ede-tmp-gone.0123456789abcdef0123456789abcdef"  # a killed mv's
    fs.pipe(left, b"PAR1 copied, never deleted")
    assert score(str(art), f"{s3_bucket}/in/", f"{s3_bucket}/out").files == 1
    fs.invalidate_cache()
    assert fs.exists(left)  # just written: could be a live run's
    monkeypatch.setattr(scoring_pipeline, "STALE_TMP_S", 0.0)
    time.sleep(0.05)
    assert score(str(art), f"{s3_bucket}/in/", f"{s3_bucket}/out").skipped == 1
    fs.invalidate_cache()
    assert not fs.exists(left)
    assert sorted(k.rsplit("/", 1)[-1] for k in fs.ls(f"{s3_bucket}/out")) == [
        "_ede-drift.json",
        "_ede-scored.json",
        "x.parquet",
    ]


def test_concurrent_scorers_into_one_folder_both_succeed_and_are_recorded(model, tmp_path):
    """Run A pauses while it writes f1 (its temporary on disk); run B scores f1 and f2
    into the same folder meanwhile (on the old code B deleted A's temporary); then A
    finishes. Both succeed and the record lists every output."""
    art, _ = model
    in_a, in_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    in_a.mkdir()
    in_b.mkdir()
    for k in (0, 1):
        frame(600, seed=k).to_parquet(in_a / f"f{k}.parquet", index=False)
    for k in (1, 2):
        frame(600, seed=k).to_parquet(in_b / f"f{k}.parquet", index=False)
    writing, resume, results = threading.Event(), threading.Event(), {}

    def pause(index, rows, committed):  # A's writer thread, f1's first batch written
        if index == 1 and not committed and not writing.is_set():
            writing.set()
            assert resume.wait(60)

    def run(key, inp, progress=None):
        try:
            results[key] = score(str(art), str(inp), str(out), batch_size=200, progress=progress)
        except BaseException as exc:  # noqa: BLE001 - checked below
            results[key] = exc

    a = threading.Thread(target=run, args=("a", in_a, pause))
    a.start()
    assert writing.wait(60)
    assert any(p.name.startswith("_ede-tmp-f1.") for p in out.iterdir())
    b = threading.Thread(target=run, args=("b", in_b))
    b.start()
    b.join(60)
    resume.set()
    a.join(60)
    assert not isinstance(results["a"], BaseException), results["a"]
    assert not isinstance(results["b"], BaseException), results["b"]
    assert (results["a"].files, results["b"].files) == (2, 2)
    assert sorted(p.name for p in out.iterdir()) == [
        "_ede-drift.json",
        "_ede-scored.json",
        "f0.parquet",
        "f1.parquet",
        "f2.parquet",
    ]
    files = _record(out)["files"]
    assert sorted(files) == ["f0.parquet", "f1.parquet", "f2.parquet"]
    assert files["f0.parquet"]["input"] == f"file://{in_a}/f0.parquet"
    assert files["f1.parquet"]["input"] == f"file://{in_a}/f1.parquet"  # A moved it last
    assert files["f2.parquet"]["input"] == f"file://{in_b}/f2.parquet"
    assert all(f["rows"] == 600 and f["model"]["sha256"] == _sha(art) for f in files.values())
    from ede.scoring import history

    runs = history.read(str(out))  # both runs' drift kept, B's first (A paused till B ended)
    assert [sorted(r["files"]) for r in runs] == [
        ["f1.parquet", "f2.parquet"],
        ["f0.parquet", "f1.parquet"],
    ]


def test_record_names_the_model_and_each_file_rows(model, tmp_path):
    art, _ = model
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    frame(120, seed=1).to_parquet(inp / "p.parquet", index=False)
    frame(80, seed=2).to_csv(inp / "q.csv", index=False)
    score(str(art), str(inp), str(out))
    record = _record(out)
    want = {"url": str(art), "sha256": _sha(art), "variant": "fp32"}
    assert record["format"] == "ede.scored/1" and record["model"] == want
    assert {n: (f["input"], f["rows"], f["model"]) for n, f in record["files"].items()} == {
        "p.parquet": (f"file://{inp}/p.parquet", 120, want),
        "q.parquet": (f"file://{inp}/q.csv", 80, want),
    }
    assert not list(out.glob("*.lock")) and not list(out.glob("*.tmp-*"))


def test_another_model_is_refused_unless_overwrite_and_the_record_stays_true(
    model, model_b, tmp_path, capsys
):
    (art_a, _), (art_b, det_b) = model, model_b
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    frame(60, seed=1).to_parquet(inp / "p.parquet", index=False)
    frame(60, seed=2).to_parquet(inp / "q.parquet", index=False)
    assert score_cli(art_a, inp, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    frame(60, seed=3).to_parquet(inp / "r.parquet", index=False)  # a new input, to be sure
    capsys.readouterr()
    assert score_cli(art_b, inp, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("ede score: error: ") and str(out) in line
    assert str(art_a) in line and str(art_b) in line and _sha(art_a)[:12] in line
    assert "--output" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written

    # --overwrite with p and r only: p and r come from B, q still from A, and so says the record
    (inp / "q.parquet").rename(tmp_path / "q.parquet")
    assert score_cli(art_b, inp, out, "--overwrite") == 0
    record = _record(out)
    a = {"url": str(art_a), "sha256": _sha(art_a), "variant": "fp32"}
    b = {"url": str(art_b), "sha256": _sha(art_b), "variant": "fp32"}
    assert record["model"] == b
    assert {n: f["model"] for n, f in record["files"].items()} == {
        "p.parquet": b,
        "q.parquet": a,
        "r.parquet": b,
    }
    got = pd.read_parquet(out / "p.parquet")
    want = det_b.decision_function(frame(60, seed=1)[FEATURES].to_numpy(np.float32))
    assert np.allclose(got["score"], want, rtol=1e-4)
    assert (out / "q.parquet").read_bytes() == before["q.parquet"]
    assert score_cli(art_b, inp, out) == 0  # the prefix is B's now
    assert score_cli(art_a, inp, out) == 2  # and A is the other model


def test_each_model_gets_its_own_hive_partition():
    from ede.pipeline.scoring import output_for

    v = "20260101T050000Z-abc123"
    assert output_for("s3://b/scores/", f"s3://m/models/ede/{v}/") == f"s3://b/scores/model={v}"
    assert output_for("s3://b/scores", f"s3://m/models/ede/{v}", per_model=False) == "s3://b/scores"
    with pytest.raises(ValueError, match="per_model=False"):
        output_for("s3://b/scores", "s3://m/odd/k=v")


def test_concurrent_record_updates_lose_no_entry(tmp_path):
    """Eight writers commit five files each into one record at once: all forty are there."""
    from ede.scoring.record import Record

    model = {"url": "m", "sha256": "0" * 64, "variant": "fp32"}
    url = f"file://{tmp_path}/_ede-scored.json"
    start = threading.Barrier(8)

    def writer(w):
        record = Record(str(tmp_path), url, model, overwrite=False)
        start.wait()
        for k in range(5):
            record.before_commit(f"w{w}-{k}.parquet")
            record.after_commit(f"w{w}-{k}.parquet", f"in/w{w}-{k}.parquet", 10 * w + k)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    files = _record(tmp_path)["files"]
    assert {n: f["rows"] for n, f in files.items()} == {
        f"w{w}-{k}.parquet": 10 * w + k for w in range(8) for k in range(5)
    }
