"""ONNX export: parity with torch (MLP and conv), metadata, int8; failures write nothing."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from ede import ESAD
from ede.cli import main
from ede.export.artifact import (
    INT8_FILE,
    INT8_STATIC_FILE,
    METADATA_FILE,
    MODEL_FILE,
    read_model,
    sha256,
)
from ede.export.exporter import export, export_folder, parity_rows

FEATURES = ["a", "b", "c", "d", "e"]


def table(n=600, seed=0, anomalies=30):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURES))) * 3 + 10, columns=FEATURES)
    df["label"] = 0
    df.loc[: anomalies - 1, ["a", "b"]] += 12
    df.loc[: anomalies - 1, "label"] = 1
    return df


def run(model: str, x: np.ndarray):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["score", "is_anomaly"], {"x": x})


def score_cli(model, inp, out) -> int:
    return main(["score", "--model", str(model), "--input", str(inp), "--output", str(out)])


def rel_diff(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`ede train` (validation split, calibrated threshold) then `ede export` with both
    quantised graphs (`--quantize int8 --quantize int8-static`)."""
    root = tmp_path_factory.mktemp("mlp")
    table().to_parquet(root / "train.parquet")
    args = ["train", "--data", str(root / "train.parquet"), "--out", str(root / "model")]
    assert main([*args, "--epochs", "3", "--target-fpr", "0.05"]) == 0
    out = root / "onnx"
    quantize = ["--quantize", "int8", "--quantize", "int8-static"]
    assert main(["export", "--model", str(root / "model"), "--out", str(out), *quantize]) == 0
    return root


def test_mlp_export_matches_torch_and_carries_its_metadata(trained):
    out = trained / "onnx"
    meta = json.loads((out / METADATA_FILE).read_text())
    det = ESAD.load(str(trained / "model"))
    fresh = table(200, seed=1)[FEATURES].to_numpy(np.float32)
    score, flag = run(str(out / MODEL_FILE), fresh)
    assert rel_diff(score, det.decision_function(fresh)) <= 1e-4
    assert score.dtype == np.float32 and flag.dtype == bool and score.shape == (200,)
    assert np.array_equal(flag, score > np.float32(meta["threshold"]))
    one, _ = run(str(out / MODEL_FILE), fresh[:1])  # dynamic batch, down to one row
    assert abs(one[0] - score[0]) <= 1e-5 * abs(score[0])

    assert meta["feature_names"] == FEATURES and meta["input_shape"] == [5]
    assert meta["exporter"]["name"] == "dynamo"
    assert meta["parity"]["max_rel_diff"] <= 1e-4 and meta["parity"]["n_rows"] == 120
    assert meta["calibration"]["target_fpr"] == 0.05  # taken over from ede train
    assert meta["threshold"] == pytest.approx(det.threshold_, rel=1e-6)
    assert meta["metrics"]["validation"]["fpr"] <= 0.05
    assert meta["data"]["validation_rows_sha256"] and meta["data"]["rows_sha256"]
    assert meta["training"]["params"]["epochs"] == 3
    assert meta["files"][MODEL_FILE]["sha256"] == sha256((out / MODEL_FILE).read_bytes())
    proto = onnx.load(str(out / MODEL_FILE))
    onnx.checker.check_model(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["feature_names"]) == FEATURES
    assert float(props["threshold"]) == meta["threshold"] and props["ede_version"]
    assert not any(p.name.endswith(".data") for p in out.iterdir())  # one self-contained file


def test_export_keeps_the_folders_threshold_unless_asked(trained, tmp_path):
    """Calibrated once, by `ede train`; `ede export` bakes that one in, and chooses again
    only when told to (here at another rate, on the same validation rows)."""
    kept = json.loads((trained / "onnx" / METADATA_FILE).read_text())
    recorded = json.loads((trained / "model" / "provenance.json").read_text())["calibration"]
    assert kept["calibration"] == {**recorded, "threshold": kept["threshold"]}
    assert kept["threshold"] == float(np.float32(recorded["threshold"]))
    again = export_folder(str(trained / "model"), str(tmp_path / "again"), target_fpr=0.2)
    assert again["calibration"]["target_fpr"] == 0.2 and again["threshold"] < kept["threshold"]
    assert again["calibration"]["n_normals"] == recorded["n_normals"]


def test_int8_is_smaller_and_reported(trained):
    out = trained / "onnx"
    meta = json.loads((out / METADATA_FILE).read_text())
    q = meta["files"][INT8_FILE]
    assert q["sha256"] == sha256((out / INT8_FILE).read_bytes())
    assert q["size_ratio"] < 0.6 and q["auroc_change_points"] is not None
    score, _ = run(str(out / INT8_FILE), table(50, seed=2)[FEATURES].to_numpy(np.float32))
    assert score.shape == (50,) and np.isfinite(score).all()


def test_int8_static_is_listed_checked_and_scores_near_fp32(trained, tmp_path):
    """The static QDQ graph: sha256 in metadata.json like the others, refused when changed,
    scores that rank rows as fp32 does, and `ede score --variant int8-static` uses it."""
    out = trained / "onnx"
    meta = json.loads((out / METADATA_FILE).read_text())
    q = meta["files"][INT8_STATIC_FILE]
    assert q["sha256"] == sha256((out / INT8_STATIC_FILE).read_bytes())
    assert q["variant"] == "int8-static" and q["size_ratio"] < 1
    assert abs(q["auroc_change_points"]) <= 2.0
    assert meta["metrics"]["validation_int8_static"]["n_rows"] > 0
    graph, _ = read_model(str(out), "int8-static")
    ops = {n.op_type for n in onnx.load_from_string(graph).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ, not the dynamic operators
    x = table(400, seed=2)[FEATURES].to_numpy(np.float32)
    exact, _ = run(str(out / MODEL_FILE), x)
    approx, flags = run(str(out / INT8_STATIC_FILE), x)
    assert np.isfinite(approx).all() and flags.dtype == bool
    assert np.corrcoef(exact, approx)[0, 1] > 0.98
    assert np.median(np.abs(approx - exact)) < 0.1 * np.std(exact)
    table(30, seed=3).to_parquet(tmp_path / "x.parquet")
    args = ["score", "--model", str(out), "--input", str(tmp_path / "x.parquet")]
    assert main([*args, "--output", str(tmp_path / "s"), "--variant", "int8-static"]) == 0
    scored = pd.read_parquet(tmp_path / "s" / "x.parquet")
    want, _ = run(str(out / INT8_STATIC_FILE), table(30, seed=3)[FEATURES].to_numpy(np.float32))
    np.testing.assert_allclose(scored["score"].to_numpy(), want, rtol=1e-6)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / INT8_STATIC_FILE).write_bytes((out / INT8_FILE).read_bytes())
    with pytest.raises(ValueError, match="sha256"):
        read_model(str(broken), "int8-static")


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """A conv ESAD on 8x8 digits (0 = normal), exported from Python with its validation rows."""
    digits = load_digits()
    X = digits.images[:, None].astype(np.float32)  # (n, 1, 8, 8)
    y = (digits.target != 0).astype(int)
    normal = np.flatnonzero(y == 0)
    det = ESAD(epochs=1, min_steps=None, conv_channels=(4, 8), latent_dim=8, seed=0)
    det.fit(X[normal[:120]])
    X_val = np.concatenate([X[normal[120:170]], X[np.flatnonzero(y == 1)[:10]]])
    y_val = np.r_[np.zeros(50), np.ones(10)]
    out = tmp_path_factory.mktemp("conv")
    meta = export(det, str(out), X_val, y_val, target_fpr=0.1)
    return det, out, meta, X


def test_conv_export_matches_torch(conv):
    det, out, meta, X = conv
    assert meta["input_shape"] == [1, 8, 8] and meta["input"]["layout"] == "image"
    assert meta["parity"]["max_rel_diff"] <= 1e-4 and meta["exporter"]["name"] == "dynamo"
    score, flag = run(str(out / MODEL_FILE), X[:7])
    assert rel_diff(score, det.decision_function(X[:7])) <= 1e-4
    assert np.array_equal(flag, score > np.float32(meta["threshold"]))
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run(str(out / MODEL_FILE), np.zeros((2, 1, 7, 7), np.float32))


def test_score_images_and_refuse_the_wrong_shape(conv, tmp_path, capsys):
    det, out, _, X = conv
    pd.DataFrame({"id": range(30), "image": list(X[:30].reshape(30, -1))}).to_parquet(
        tmp_path / "ok.parquet"
    )
    assert score_cli(out, str(tmp_path / "ok.parquet"), str(tmp_path / "scored")) == 0
    got = pd.read_parquet(tmp_path / "scored" / "ok.parquet")
    assert rel_diff(got["score"].to_numpy(), det.decision_function(X[:30])) <= 1e-4
    small = X[:30, :, :7, :7].reshape(30, -1)  # 7x7 images
    pd.DataFrame({"image": list(small)}).to_parquet(tmp_path / "small.parquet")
    capsys.readouterr()
    assert score_cli(out, str(tmp_path / "small.parquet"), str(tmp_path / "bad")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "small.parquet" in err[0] and "'image'" in err[0], err
    assert "49 values" in err[0] and "(1, 8, 8) = 64" in err[0]
    assert not (tmp_path / "bad").exists()


def test_failed_parity_writes_nothing(trained, tmp_path, monkeypatch):
    monkeypatch.setattr("ede.export.exporter.PARITY_TOLERANCE", -1.0)
    with pytest.raises(ValueError, match="parity check failed.*nothing written"):
        export_folder(str(trained / "model"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_parity_checks_a_seeded_sample_of_many_validation_rows(trained, tmp_path, monkeypatch):
    """Above PARITY_ROWS rows torch scores a sample (the same one every time) for parity;
    onnxruntime still scores every row for the metrics; a recalibration scores them all."""
    monkeypatch.setattr("ede.export.exporter.PARITY_ROWS", 50)
    meta = export_folder(str(trained / "model"), str(tmp_path / "kept"))
    assert meta["parity"]["n_rows"] == 50 and meta["metrics"]["validation"]["n_rows"] == 120
    assert meta["parity"]["max_rel_diff"] <= 1e-4
    again = export_folder(str(trained / "model"), str(tmp_path / "new"), target_fpr=0.1)
    assert again["parity"]["n_rows"] == 120
    rows = parity_rows(120)
    assert len(rows) == 50 == len(set(rows)) and np.array_equal(rows, parity_rows(120))
    assert np.all(np.diff(rows) > 0) and rows.max() < 120


def test_export_without_validation_rows_is_one_line(tmp_path, capsys):
    df = table(200)
    det = ESAD(epochs=1, min_steps=None, hidden=(8,), latent_dim=2).fit(df[FEATURES])
    det.save(str(tmp_path / "model"))
    code = main(["export", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "validation.parquet" in err and "--validation" in err
    assert not (tmp_path / "out").exists()


def ede_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed `ede` console script in its own process, as a user runs it."""
    exe = Path(sys.executable).with_name("ede")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_a_changed_weights_file_is_refused_and_nothing_is_exported(trained, tmp_path):
    """One byte of weights.pt flipped: the sha256 that esad.json recorded no longer holds."""
    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    weights = bytearray((model / "weights.pt").read_bytes())
    weights[len(weights) // 2] ^= 0x01  # inside the tensors: still a loadable state dict
    (model / "weights.pt").write_bytes(bytes(weights))
    got = ede_cli("export", "--model", str(model), "--out", str(tmp_path / "out"))
    err = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(err) == 1, got.stderr
    expected = f"{model}/weights.pt: sha256 does not match esad.json (changed or half-written)"
    assert expected in err[0]
    assert not (tmp_path / "out").exists()


def test_weights_left_by_a_crash_under_the_old_esad_json_are_refused(trained, tmp_path, capsys):
    """A rewrite killed after the new weights.pt and before the new esad.json: the folder
    holds one model's weights under another's config, both loadable on their own."""
    other = tmp_path / "other"
    args = ["train", "--data", str(trained / "train.parquet"), "--out", str(other)]
    assert main([*args, "--epochs", "1", "--seed", "7"]) == 0
    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "clean")]) == 0
    shutil.copyfile(other / "weights.pt", model / "weights.pt")
    capsys.readouterr()
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{model}/weights.pt: sha256 does not match" in err[0], err
    assert not (tmp_path / "out").exists()
