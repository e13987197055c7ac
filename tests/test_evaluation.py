"""Test metrics of candidate and champion: one streaming pass, the old whole-table numbers,
memory of a batch rather than of the table, and a champion that cannot score these rows."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from ede import ESAD
from ede.core.metrics import evaluate
from ede.data.ingest import PreparedSplits
from ede.data.tables import IMAGE_COLUMN, read_labelled_rows
from ede.export.artifact import MODEL_FILE, infer, read_model, session
from ede.export.exporter import export
from ede.pipeline.evaluation import compare_on_test
from ede.scoring.evaluation import evaluate_artifact, evaluate_artifacts

D = 20
NAMES = [f"f{j}" for j in range(D)]
B_NAMES = NAMES[19:9:-1] + NAMES[:5]  # another model: 15 of the columns, in another order


def rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)).astype(np.float32)
    y = (rng.random(n) < 0.05).astype(np.int64)
    X[y == 1, :8] += 3
    return X, y


def arrow(X: np.ndarray, y: np.ndarray, schema: pa.Schema | None = None) -> pa.Table:
    return pa.table({**dict(zip(NAMES, X.T, strict=True)), "label": y}, schema=schema)


def fit_and_export(names: list[str], folder: Path, seed: int) -> str:
    X, y = rows(400, seed)
    df = pd.DataFrame(X, columns=NAMES)[names]
    det = ESAD(epochs=2, min_steps=None, hidden=(16, 8), latent_dim=4, seed=seed)
    det.fit(df[:300], y[:300])
    export(det, str(folder), df[300:].to_numpy(), y[300:], target_fpr=0.1)
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny exported nets on different columns (A: f0..f19, B: 15 of them reordered)."""
    root = tmp_path_factory.mktemp("artifacts")
    return fit_and_export(NAMES, root / "a", 0), fit_and_export(B_NAMES, root / "b", 1)


def write_table(path: Path, n: int, group: int, seed: int = 2, drop: tuple = ()) -> str:
    """id, the features in shuffled column order, label; row groups of `group` rows."""
    X, y = rows(n, seed)
    order = np.random.default_rng(seed).permutation(D)
    columns = {"id": np.arange(n)} | {NAMES[j]: X[:, j] for j in order if NAMES[j] not in drop}
    pq.write_table(pa.table({**columns, "label": y}), path, row_group_size=group)
    return str(path)


def whole_table(artifact: str, table: str) -> dict:
    """The metrics as `evaluate_artifact` computed them before: the whole table read at once."""
    graph, meta = read_model(artifact)
    X, y = read_labelled_rows(
        table, list(meta["feature_names"]), tuple(meta["input_shape"]), "label"
    )
    score, flag = infer(session(graph), X)
    flag, normal = flag.astype(bool), y == 0
    return {
        **evaluate(y, score),
        "rows": int(len(y)),
        "labelled_anomalies": int(y.sum()),
        "flagged": int(flag.sum()),
        "recall_at_threshold": float(flag[~normal].mean()) if (~normal).any() else None,
        "fpr_at_threshold": float(flag[normal].mean()) if normal.any() else None,
    }


def prepared(table: str) -> PreparedSplits:
    root = table.rsplit("/", 1)[0]
    return PreparedSplits(root, "sha", NAMES, "label", {}, {}, source=root)


def test_one_pass_equals_the_whole_table_metrics(models, tmp_path):
    a, b = models
    table = write_table(tmp_path / "test.parquet", 2000, group=300)  # 7 row groups
    assert pq.ParquetFile(table).metadata.num_row_groups == 7
    got = evaluate_artifacts([a, b], table)
    assert got == [whole_table(a, table), whole_table(b, table)]
    assert got[0]["rows"] == 2000 and 0 < got[0]["labelled_anomalies"] < 2000
    assert got[0] != got[1]  # two models, two sets of numbers
    assert evaluate_artifact(b, table) == got[1]
    out = compare_on_test(a, prepared(table), {"url": b})
    added = [n for n in NAMES if n not in B_NAMES]  # A reads five columns B does not
    drawn = out.pop("curves")  # what the run's report draws, beside the metrics
    assert drawn["candidate"]["roc"]["fpr"][0] == 0.0 and drawn["champion"]["hist"]["edges"]
    assert out == {
        "candidate": got[0],
        "champion": got[1],
        "champion_error": None,
        "schema_change": f"features added {added} against the champion's",
        "extremes": None,  # the image grid's: tables have none
    }
    assert compare_on_test(a, prepared(table), {"url": a})["schema_change"] is None
    assert compare_on_test(a, prepared(table), None)["champion"] is None


def test_champion_that_cannot_score_the_rows_does_not_fail_the_candidate(models, tmp_path):
    a, b = models
    table = write_table(tmp_path / "test.parquet", 900, group=256, drop=("f7",))  # A needs it
    out = compare_on_test(b, prepared(table), {"url": a})
    assert out["candidate"] == whole_table(b, table) and out["champion"] is None
    error = out["champion_error"]
    assert "test.parquet" in error and "['f7']" in error and "\n" not in error
    assert out["schema_change"].startswith("features missing [")  # B lacks five of A's
    with pytest.raises(ValueError, match=r"missing 1 of 20 feature column\(s\).*\['f7'\]"):
        compare_on_test(a, prepared(table), {"url": b})  # the candidate's own error raises
    (alone,) = evaluate_artifacts([a], table)  # nothing left to stream for
    assert isinstance(alone, ValueError) and "['f7']" in str(alone)


def test_champion_failing_mid_stream_or_corrupt_is_its_error_alone(models, tmp_path):
    a, b = models
    X, y = rows(1000)
    X[700, 6] = np.nan  # f6: A reads it, B does not
    path = tmp_path / "test.parquet"
    pq.write_table(arrow(X, y), path, row_group_size=200)
    out = compare_on_test(b, prepared(str(path)), {"url": a})
    assert out["candidate"] == whole_table(b, str(path))
    assert "column 'f6' has 1 NaN/inf/missing value(s)" in out["champion_error"]
    assert "first at row 700" in out["champion_error"]
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in Path(a).iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    (corrupt / MODEL_FILE).write_bytes((corrupt / MODEL_FILE).read_bytes()[:-1] + b"\0")
    got = evaluate_artifacts([b, str(corrupt), str(tmp_path / "nowhere")], str(path))
    assert got[0] == out["candidate"]
    assert isinstance(got[1], ValueError) and "sha256" in str(got[1])
    assert isinstance(got[2], FileNotFoundError)


def test_bad_labels_fail_for_all_in_one_line(models, tmp_path):
    a, b = models
    X, y = rows(600)
    y[450] = 2
    path = tmp_path / "test.parquet"
    pq.write_table(arrow(X, y), path, row_group_size=100)
    with pytest.raises(ValueError, match=r"test\.parquet: label column 'label' has values"):
        evaluate_artifacts([a, b], str(path))


def test_image_models_stream_too(tmp_path):
    digits = load_digits()
    X = digits.images[:, None].astype(np.float32)  # (n, 1, 8, 8)
    y = (digits.target != 0).astype(np.int64)
    normal = np.flatnonzero(y == 0)
    det = ESAD(epochs=1, min_steps=None, conv_channels=(4, 8), latent_dim=8, seed=0)
    det.fit(X[normal[:120]])
    export(det, str(tmp_path / "conv"), X[normal[120:170]], np.zeros(50), target_fpr=0.1)
    images = pa.array(list(X[200:700].reshape(500, -1)), pa.list_(pa.float32()))
    table = tmp_path / "test.parquet"
    pq.write_table(pa.table({IMAGE_COLUMN: images, "label": y[200:700]}), table, row_group_size=96)
    got = evaluate_artifact(str(tmp_path / "conv"), str(table))
    assert got == whole_table(str(tmp_path / "conv"), str(table)) and got["rows"] == 500


MEASURE = r"""
import json, sys, tracemalloc
import numpy as np
import pyarrow as pa
from ede.core.metrics import evaluate
from ede.scoring.evaluation import evaluate_artifacts  # imports are not the pass's memory

table, *artifacts = sys.argv[1:]
tracemalloc.start()
results = evaluate_artifacts(artifacts, table)
python = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
n = results[0]["rows"]
y, score = np.zeros(n, np.int8), np.random.default_rng(0).random(n, dtype=np.float32)
y[::20] = 1
tracemalloc.start()
evaluate(y, score)  # what scikit-learn's curves take on their own, given all n scores
metrics = tracemalloc.get_traced_memory()[1]
print(json.dumps({"python": python, "arrow": pa.default_memory_pool().max_memory(),
                  "metrics": metrics, "rows": [r["rows"] for r in results]}))
"""


def test_memory_is_a_batch_and_the_scores_not_the_table(models, tmp_path):
    """1M rows x 20 float32 features and an int64 label (88 MB of columns) judged by two
    models. Beside the metrics' own need (scikit-learn's curves take ~70 bytes a row given
    all the scores, the one cost that grows with rows), the pass holds a row group or two
    and 9 bytes a row (two float32 scores, an int8 label): measured ~22 MB. The old
    whole-table reads held ~350 MB beside it (4x the table), and fail this bound."""
    a, b = models
    n, group = 1_000_000, 65_536  # ingest's row groups at 20 features
    path = tmp_path / "test.parquet"
    schema = pa.schema([(c, pa.float32()) for c in NAMES] + [("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, group):
            X, y = rows(min(group, n - start), seed=start)
            writer.write_table(arrow(X, y, schema))
    table_bytes = n * (4 * D + 8)
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), a, b],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    got = json.loads(run.stdout)
    assert got["rows"] == [n, n]
    beside_metrics = got["python"] + got["arrow"] - got["metrics"]
    assert beside_metrics < 0.5 * table_bytes, (got, table_bytes)


def test_test_split_and_models_on_s3(models, s3_bucket, tmp_path):
    import s3fs

    a, b = models
    table = write_table(tmp_path / "test.parquet", 700, group=128)
    fs = s3fs.S3FileSystem()
    fs.put(table, f"{s3_bucket}/prepared/test.parquet")
    fs.put(f"{b}/", f"{s3_bucket}/models/b/", recursive=True)
    out = compare_on_test(
        a, prepared(f"{s3_bucket}/prepared/test.parquet"), {"url": f"{s3_bucket}/models/b"}
    )
    assert set(out.pop("curves")) == {"candidate", "champion"}
    assert out == {
        "candidate": whole_table(a, table),
        "champion": whole_table(b, table),
        "champion_error": None,
        "schema_change": compare_on_test(a, prepared(table), {"url": b})["schema_change"],
        "extremes": None,
    }
    assert out["schema_change"]  # read from the champion's metadata.json on S3
