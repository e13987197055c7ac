"""The artifact on an edge box: onnxruntime and numpy only, neither torch nor ede importable.

EDGE_LINES are the lines the README shows an edge user; the test runs exactly them.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from ede import ESAD
from ede.export.artifact import MODEL_FILE
from ede.export.exporter import export

EDGE_LINES = """\
import json
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
features = json.loads(session.get_modelmeta().custom_metadata_map["feature_names"])
rows = json.load(open("rows.json"))  # [{"feature": value, ...}, ...], any key order
x = np.array([[row[f] for f in features] for row in rows], dtype=np.float32)
score, is_anomaly = session.run(["score", "is_anomaly"], {"x": x})
print(score, is_anomaly)  # higher = more anomalous; is_anomaly: score > threshold
"""

PRELUDE = """\
import sys
sys.path.append(sys.argv[1])  # a folder holding only onnxruntime and numpy
for name in ("torch", "ede", "pandas", "pyarrow", "sklearn"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(f"{name} is importable here; the edge test must not see it")
"""

REPORT = "\nprint(json.dumps({'score': score.tolist(), 'is_anomaly': is_anomaly.tolist()}))\n"


def runtime_only_path(root: Path) -> Path:
    """Symlinks to the installed onnxruntime and numpy, nothing else."""
    site = Path(onnxruntime.__file__).parent.parent
    folder = root / "site"
    folder.mkdir()
    for name in ("onnxruntime", "onnxruntime.libs", "numpy", "numpy.libs"):
        if (site / name).exists():
            os.symlink(site / name, folder / name)
    return folder


def test_artifact_runs_with_onnxruntime_and_numpy_alone(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 3)), columns=["temp", "volt", "rpm"])
    det = ESAD(epochs=2, min_steps=None, hidden=(8,), latent_dim=2, seed=0).fit(df)
    export(det, str(tmp_path / "art"), df.to_numpy()[:80], np.zeros(80))
    box = tmp_path / "box"
    box.mkdir()
    shutil.copy(tmp_path / "art" / MODEL_FILE, box / "model.onnx")  # the .onnx alone
    rows = [{"rpm": 1.0, "volt": -0.5, "temp": 0.2}, {"volt": 9.0, "temp": 8.0, "rpm": -7.0}]
    (box / "rows.json").write_text(json.dumps(rows))

    script = PRELUDE + EDGE_LINES + REPORT
    site = runtime_only_path(tmp_path)
    cmd = [sys.executable, "-I", "-S", "-c", script, str(site)]
    proc = subprocess.run(cmd, cwd=box, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    want = det.decision_function(pd.DataFrame(rows)[["temp", "volt", "rpm"]])
    assert np.allclose(got["score"], want, rtol=1e-4)
    threshold = json.loads((tmp_path / "art" / "metadata.json").read_text())["threshold"]
    assert got["is_anomaly"] == (np.float32(got["score"]) > np.float32(threshold)).tolist()
    assert got["is_anomaly"][1] and got["score"][1] > got["score"][0]


@pytest.mark.parametrize("name", ["torch", "ede"])
def test_the_edge_interpreter_really_lacks(tmp_path, name):
    site = runtime_only_path(tmp_path)
    code = f"import sys; sys.path.append({str(site)!r}); import numpy, onnxruntime; import {name}"
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and f"No module named '{name}'" in proc.stderr
