"""The run's HTML report: every figure decodes and has content, nothing is fetched, and
`ede report` rebuilds it from what a run stored."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

from ede.cli import main
from ede.core.loss_tail import loss_tail
from ede.core.metrics import curves
from ede.reporting import run


def _stored_run(folder) -> str:
    """A published version folder as the retrain flow leaves it: report.json with both
    models' curves on the test rows, the training history and the trials."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(500, int), np.ones(25, int)]
    good, weak = rng.normal(size=525) + 3 * y, rng.normal(size=525) + 1 * y
    history = [
        {
            "epoch": e,
            "reconstruction": 1 / (e + 1),
            "entropy": 0.5 / (e + 1),
            "consistency": 0.1 / (e + 1),
            "loss": 1 / (e + 2),
            "val_auroc": 0.8 + 0.02 * e,
        }  # fmt: skip
        for e in range(10)
    ]
    trials = [
        {"trial_id": f"t{i}", "lambda_entropy": 10 ** rng.uniform(-3, 0),
         "lambda_consistency": 10 ** rng.uniform(-2, 0.5), "final_val_auroc": 0.9 + 0.01 * i,
         "defaults": i == 0, "best": i == 3, "status": "done"}  # fmt: skip
        for i in range(6)
    ] + [{"trial_id": "t6", "lambda_entropy": 0.01, "lambda_consistency": 0.3,
          "final_val_auroc": None, "status": "error"}]  # fmt: skip
    report = {
        "version": "20261201T000000Z-abc123",
        "data": {"source": "s3://b/t", "sha256": "ab" * 32, "rows": {"fit": 300}},
        "metrics": {
            "candidate": {"auroc": 0.98, "auprc": 0.8, "rows": 525},
            "champion": {"auroc": 0.85, "auprc": 0.4, "rows": 525},
            "curves": {"candidate": curves(y, good), "champion": curves(y, weak)},
        },
        "threshold": 2.0,
        "training": {
            "history": history,
            "loss_tail": loss_tail(
                [*history[:-1], {**history[-1], "loss": 0.9, "kept_epoch": 8, "kept_loss": 0.1}]
            ),
        },
        "search": {"trials": 7, "best_trial": "t3", "trials_table": trials},
        "decision": {"promote": True, "reason": "test AUROC 0.9800 >= champion's 0.8500"},
    }
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder)


def test_every_figure_decodes_has_content_and_nothing_is_fetched(tmp_path):
    from matplotlib.image import imread

    page = run.build(_stored_run(tmp_path / "v1"))
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # ROC/PR, histograms, training, tuning; tables get no image grid
    for data in images:
        pixels = imread(io.BytesIO(base64.b64decode(data)))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
        colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 50  # lines, markers, text: many distinct colours
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)  # nothing external
    assert "<script" not in page.lower()
    assert "promoted" in page and "0.9800" in page
    # the shipped model's last epochs, and the guard's choice when the last one spiked
    assert "lowest 0.1 at epoch 8; kept epoch 8&#x27;s weights" in page


def test_ede_report_rebuilds_the_page_from_storage(tmp_path, capsys):
    version = _stored_run(tmp_path / "v1")
    out = tmp_path / "page.html"
    assert main(["report", "--run", version, "--out", str(out)]) == 0
    assert out.read_text() == run.build(version)
    assert str(out) in capsys.readouterr().out
    assert main(["report", "--run", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def _exported(folder, X, y, **params) -> str:
    """A small ESAD trained on the normal rows and exported with validation rows."""
    from ede import ESAD
    from ede.export.exporter import export

    normal = np.flatnonzero(y == 0)
    det = ESAD(epochs=1, min_steps=None, latent_dim=4, seed=0, **params).fit(X[normal[:100]])
    val = np.r_[normal[100:150], np.flatnonzero(y == 1)[:10]]
    export(det, str(folder), X[val], y[val], target_fpr=0.1)
    return str(folder)


def _report_of(artifact: str, test_url: str, folder) -> str:
    """A version folder whose report.json holds a real evaluation of `artifact` on the
    table at `test_url` (what compare_on_test stores: curves, and images for image data)."""
    from ede.scoring.evaluation import evaluate_artifacts

    (metrics,) = evaluate_artifacts([artifact], test_url, with_curves=True)
    report = {
        "version": folder.name,
        "metrics": {
            "candidate": metrics,
            "champion": None,
            "curves": {"candidate": metrics.pop("curves"), "champion": None},
            "extremes": metrics.pop("extremes", None),
        },
        "threshold": 0.0,
    }
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder)


GRID = "Test images scored most and least anomalous"


def test_the_image_grid_shows_for_image_data(tmp_path):
    """A real conv model evaluated on digits: its report holds the grid. (Tables get none:
    the evaluation keeps no images for them, tests/test_evaluation.py, and a tabular
    report draws four figures, above.)"""
    import pandas as pd
    from matplotlib.image import imread
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.images[:, None].astype(np.float32)  # (n, 1, 8, 8)
    y = (digits.target != 0).astype(int)
    test = np.r_[np.flatnonzero(y == 0)[150:], np.flatnonzero(y == 1)[10:60]]  # 28 + 50
    pd.DataFrame({"image": list(X[test].reshape(len(test), -1)), "label": y[test]}).to_parquet(
        tmp_path / "images.parquet"
    )
    conv = _exported(tmp_path / "conv", X, y, conv_channels=(4, 8))
    page = run.build(_report_of(conv, str(tmp_path / "images.parquet"), tmp_path / "v-img"))
    figures = dict(re.findall(r'<h3>([^<]+)</h3><img alt="[^"]*" src="data:image/png;base64,'
                              r'([^"]+)"', page))  # fmt: skip
    assert GRID in figures
    pixels = imread(io.BytesIO(base64.b64decode(figures[GRID])))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600  # two rows of eight images
    assert pixels[..., :3].std() > 0.1  # digits, not a blank canvas
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # grey levels of the digits, the red and blue frames, the text
    stored = json.loads((tmp_path / "v-img" / "report.json").read_text())["metrics"]["extremes"]
    most, least = stored["most"], stored["least"]
    assert stored["shape"] == [1, 8, 8] and len(most) == len(least) == 8
    assert min(m["score"] for m in most) > max(m["score"] for m in least)
    assert len(most[0]["pixels"]) == 64
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)

    from ede.export.artifact import infer, read_model, session

    graph, _ = read_model(conv)
    scores, _ = infer(session(graph, 1), X[test])  # the same rows, scored whole
    top = np.argsort(scores)[::-1][:8]
    assert [m["score"] for m in most] == pytest.approx(scores[top].tolist(), rel=1e-6)
    assert most[0]["pixels"] == pytest.approx(X[test][top[0]].ravel().tolist(), abs=1e-4)
    assert [m["label"] for m in most] == y[test][top].tolist()


def test_the_extremes_kept_across_batches_are_the_whole_pass_s():
    from ede.scoring.evaluation import EXTREMES, _Extremes

    rng = np.random.default_rng(0)
    score = rng.normal(size=1000).astype(np.float32)
    images = rng.normal(size=(1000, 1, 4, 4)).astype(np.float32)
    labels = (rng.random(1000) < 0.1).astype(np.int64)
    kept = _Extremes()
    for start in range(0, 1000, 70):  # batches of 70, the last one short
        part = slice(start, start + 70)
        kept.add(score[part], labels[part], images[part])
    got = kept.summary()
    order = np.argsort(score)
    assert [m["score"] for m in got["most"]] == score[order[::-1][:EXTREMES]].tolist()
    assert [m["score"] for m in got["least"]] == score[order[:EXTREMES]].tolist()
    assert got["least"][0]["pixels"] == pytest.approx(images[order[0]].ravel().tolist(), abs=1e-4)
    assert [m["label"] for m in got["most"]] == labels[order[::-1][:EXTREMES]].tolist()
