"""The `ede` command line: help, train, bench, and one-line errors with nothing left behind."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ede import ESAD
from ede.cli import main


def _frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    df["label"] = 0
    df.loc[:9, ["a", "b"]] += 4
    df.loc[:9, "label"] = 1
    return df


def test_console_script_help():
    exe = Path(sys.executable).with_name("ede")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "bench"):
        assert command in out


def test_train_writes_a_loadable_model(tmp_path, capsys):
    data = tmp_path / "train.parquet"
    _frame().to_parquet(data)
    out = tmp_path / "model"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "10 labelled anomalies" in printed
    assert "training loss, epochs 0-2: " in printed  # the curve's tail, where a spike shows
    det = ESAD.load(str(out))
    assert list(det.feature_names_in_) == ["a", "b", "c", "d"]
    assert det.decision_function(_frame().drop(columns="label").to_numpy()).shape == (300,)


def test_train_on_s3(s3_bucket, capsys):
    data = f"{s3_bucket}/in/train.parquet"
    _frame().to_parquet(data)
    assert main(["train", "--data", data, "--out", f"{s3_bucket}/model", "--epochs", "2"]) == 0
    assert ESAD.load(f"{s3_bucket}/model").input_shape_ == (4,)


def test_bad_table_is_one_line_and_writes_nothing(tmp_path, capsys):
    df = _frame()
    df.loc[5, "c"] = np.nan
    data = tmp_path / "bad.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "model"
    assert main(["train", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bad.csv" in err and "column 'c'" in err and "NaN" in err
    assert not out.exists()


def test_a_renamed_label_is_refused_and_no_label_is_said(tmp_path, capsys):
    """Before: `target` became a fifth feature ("0 labelled anomalies"), and the same rows
    as --validation of an export counted every anomaly as normal, both with exit 0."""
    renamed = tmp_path / "renamed.parquet"
    _frame().rename(columns={"label": "target"}).to_parquet(renamed)
    model, artifact = tmp_path / "model", tmp_path / "artifact"
    assert main(["train", "--data", str(renamed), "--out", str(model), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "renamed.parquet" in err and "no label column 'label'" in err and "--no-label" in err
    assert not model.exists()

    good = tmp_path / "good.parquet"
    _frame().to_parquet(good)
    assert main(["train", "--data", str(good), "--out", str(model), "--epochs", "1"]) == 0
    export = ["export", "--model", str(model), "--out", str(artifact)]
    assert main([*export, "--validation", str(renamed)]) == 2
    err = capsys.readouterr().err.strip()
    assert "renamed.parquet" in err and "no label column 'label'" in err
    assert not artifact.exists()

    bare = tmp_path / "bare.parquet"
    _frame().drop(columns="label").to_parquet(bare)
    unlabelled = tmp_path / "unlabelled"
    argv = ["train", "--data", str(bare), "--out", str(unlabelled), "--epochs", "1"]
    assert main([*argv, "--no-label"]) == 0
    assert "0 labelled anomalies" in capsys.readouterr().out
    assert list(ESAD.load(str(unlabelled)).feature_names_in_) == ["a", "b", "c", "d"]


def test_train_states_its_features_and_leaves_declared_id_columns_out(tmp_path, capsys):
    """Every numeric column but the label and --id-columns is a feature, named on one line;
    a declared id column that is absent is one error naming it, with nothing written."""
    df = _frame()
    df.insert(0, "row_id", np.arange(len(df)))
    df["batch"] = 7
    data = tmp_path / "ids.parquet"
    df.to_parquet(data)
    out = tmp_path / "model"
    argv = ["train", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--id-columns", "row_id,batch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "features (4): a, b, c, d"
    assert list(ESAD.load(str(out)).feature_names_in_) == ["a", "b", "c", "d"]

    undeclared = tmp_path / "all"
    assert main(["train", "--data", str(data), "--out", str(undeclared), "--epochs", "1"]) == 0
    assert "features (6): row_id, a, b, c, d, batch" in capsys.readouterr().out

    missing = tmp_path / "missing"
    argv = ["train", "--data", str(data), "--out", str(missing), "--epochs", "1"]
    assert main([*argv, "--id-columns", "row_id,rowid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ids.parquet" in err[0], err
    assert "--id-columns not in the table: ['rowid']" in err[0]
    assert not missing.exists()


def test_a_boolean_feature_trains_exports_and_scores(tmp_path, capsys):
    """Before one rule owned the feature types, `ede train` took a boolean column and
    `ede score` refused the very table it trained on."""
    df = _frame()
    df.insert(2, "flag", np.arange(len(df)) % 4 == 0)
    data = tmp_path / "flags.parquet"
    df.to_parquet(data)
    model, artifact, scores = tmp_path / "model", tmp_path / "artifact", tmp_path / "scores"
    assert main(["train", "--data", str(data), "--out", str(model), "--epochs", "2"]) == 0
    assert "features (5): a, b, flag, c, d" in capsys.readouterr().out
    assert main(["export", "--model", str(model), "--out", str(artifact)]) == 0
    assert (
        main(["score", "--model", str(artifact), "--input", str(data), "--output", str(scores)])
        == 0
    )
    got = pd.read_parquet(next(scores.glob("*.parquet")))["score"].to_numpy()
    X = df.drop(columns="label").to_numpy(dtype=np.float32)
    np.testing.assert_allclose(
        got, ESAD.load(str(model)).decision_function(X), rtol=1e-4, atol=1e-5
    )


def test_missing_input_file(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope.parquet"), "--out", "x"]) == 2
    assert "nope.parquet" in capsys.readouterr().err


def test_bench_odds_on_generated_tables(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(400, 5)), rng.normal(3, 1, size=(60, 5))])
    y = np.r_[np.zeros(400), np.ones(60)]
    np.savez(tmp_path / "toy.npz", X=X, y=y)
    report = tmp_path / "r.json"
    args = ["bench", "odds", "--data-dir", str(tmp_path), "--datasets", "toy", "--seeds", "2"]
    args += ["--methods", "esad,iforest,hgb_supervised", "--json", str(report)]
    assert main(args) == 0
    got = json.loads(report.read_text())
    assert got["protocol"]["gamma_l"] == 0.05
    assert {r["method"] for r in got["results"]} == {"esad", "iforest", "hgb_supervised"}
    assert len(got["results"]) == 6
    esad = next(s for s in got["summary"] if s["method"] == "esad")
    assert esad["auroc_mean"] > 0.9 and esad["n_seeds"] == 2
    out = capsys.readouterr().out
    assert "| toy |" in out and f"report: {tmp_path / 'r.html'}" in out
    _the_bench_page_embeds_its_curves_and_needs_nothing_else(tmp_path, got)


def _the_bench_page_embeds_its_curves_and_needs_nothing_else(folder, got) -> None:
    """Beside the JSON: one PNG per data set and a page embedding them, drawn from the
    first seed's scores the bench computed (no second fit)."""
    import base64
    import io
    import re

    from matplotlib.image import imread

    drawn = got["curves"]["toy"]
    assert drawn["seed"] == 0 and set(drawn["methods"]) == {"esad", "iforest", "hgb_supervised"}
    assert len(drawn["methods"]["esad"]["roc"]["fpr"]) <= 200  # thinned for the JSON
    page = (folder / "r.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1  # one data set, one figure
    assert base64.b64decode(images[0]) == (folder / "r-toy.png").read_bytes()
    pixels = imread(io.BytesIO(base64.b64decode(images[0])))
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05  # not a blank canvas
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # three methods' lines, the chance line, text
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)  # nothing external
    assert "<script" not in page.lower() and "<link" not in page.lower()
    esad = next(s for s in got["summary"] if s["method"] == "esad")
    spread = f"{100 * esad['auroc_mean']:.1f} ± {100 * esad['auroc_std']:.1f}"
    assert spread in page  # the table of the JSON it sits beside


@pytest.mark.parametrize(
    "extra, match",
    [(["--methods", "esad,magic"], "unknown method"), (["--datasets", "missing"], "missing.npz")],
)
def test_bench_odds_bad_arguments(tmp_path, capsys, extra, match):
    args = ["bench", "odds", "--data-dir", str(tmp_path), "--json", str(tmp_path / "r.json")]
    assert main(args + extra) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_bench_train_times_both_precisions_for_tables_and_images(tmp_path, capsys):
    """fp32 and bf16 side by side, in process, for the tabular and the image defaults;
    an image run trains the conv net over its step budget (here a short one)."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(600, 5)), rng.normal(3, 1, size=(80, 5))])
    np.savez(tmp_path / "toy.npz", X=X, y=np.r_[np.zeros(600), np.ones(80)])
    out = tmp_path / "train.json"
    args = ["bench", "train", "--data-dir", str(tmp_path), "--dataset", "toy", "--no-ray"]
    args += ["--epochs", "4", "--image-normals", "120", "--image-max-steps", "6"]
    assert main([*args, "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert {r["precision"] for r in got["runs"].values()} == {"fp32", "bf16"}
    images = got["images"]
    assert images["config"]["net"]["input_shape"] == [1, 28, 28]
    assert images["config"]["train"]["max_steps"] == 6
    for run in images["runs"].values():
        assert run["epochs"] == 6  # fewer fit images than a batch: one step an epoch
        assert run["epoch_s_median"] > 0 and 0.0 <= run["final_val_auroc"] <= 1.0
    assert images["bf16_vs_fp32"]["epoch_time_ratio"] > 0
    shown = capsys.readouterr().out
    assert "image defaults on digit 0" in shown and "images: bf16 vs fp32" in shown
