"""The run's HTML report: every figure decodes and has content, nothing is fetched, and
`ede report` rebuilds it from what a run stored."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np

from ede.cli import main
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
        "training": {"history": history},
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
    assert len(images) == 4  # ROC/PR, histograms, training, tuning
    for data in images:
        pixels = imread(io.BytesIO(base64.b64decode(data)))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
        colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 50  # lines, markers, text: many distinct colours
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)  # nothing external
    assert "<script" not in page.lower()
    assert "promoted" in page and "0.9800" in page


def test_ede_report_rebuilds_the_page_from_storage(tmp_path, capsys):
    version = _stored_run(tmp_path / "v1")
    out = tmp_path / "page.html"
    assert main(["report", "--run", version, "--out", str(out)]) == 0
    assert out.read_text() == run.build(version)
    assert str(out) in capsys.readouterr().out
    assert main(["report", "--run", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
