"""Retraining and scoring flows end to end: S3 (moto's server), real Ray, real Prefect."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import s3fs

from ede.export import registry

pytestmark = pytest.mark.usefixtures("prefect_harness", "ray_cluster")

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(epochs=3, batch_size=64, quantize_int8=False, min_rows=50)


def _keys(fs: s3fs.S3FileSystem, url: str) -> list[str]:
    fs.invalidate_cache()
    base = url.removeprefix("s3://")
    return [k[len(base) + 1 :] for k in fs.find(base)]


def test_retrain_then_score_on_s3_and_the_promotion_rule(
    s3_bucket, write_anomaly_table, monkeypatch
):
    import flows.retrain
    from flows.retrain import retrain
    from flows.score import score

    data = write_anomaly_table(f"{s3_bucket}/incoming/table.parquet", n_normal=600, n_anomaly=40)
    first = retrain(data_url=data, storage_url=s3_bucket, trials=2, **SMALL)
    fs = s3fs.S3FileSystem()
    keys = _keys(fs, s3_bucket)
    v1 = first["version"]
    prepared = [k for k in keys if k.startswith("prepared/")]
    assert {k.rsplit("/", 1)[1] for k in prepared} == {
        "train.parquet",
        "test.parquet",
        "manifest.json",
    }
    assert f"runs/{v1}/tune/results.parquet" in keys  # tuning results
    # the chosen configuration refitted on every training row, threshold carried over
    assert any(k.startswith(f"runs/{v1}/refit/") and k.endswith("state.pt") for k in keys)
    provenance = json.loads(fs.cat_file(f"{s3_bucket}/runs/{v1}/model/provenance.json"))
    manifest = json.loads(fs.cat_file(f"{s3_bucket}/{prepared[0].rsplit('/', 1)[0]}/manifest.json"))
    assert provenance["validation_rows_fitted"] is True
    assert (
        provenance["training"]["refit_rows"]
        == manifest["rows"]["fit"] + manifest["rows"]["validation"]
    )
    assert provenance["calibration"]["in_sample_level"] is not None
    # trial checkpoints, written by the trials themselves (no Ray Train run per trial)
    assert any(k.startswith(f"runs/{v1}/tune/") and k.endswith("/state.pt") for k in keys)
    for name in ("model.onnx", "metadata.json", "report.json", "report.html"):
        assert f"models/ede/{v1}/{name}" in keys
    assert first["report_url"] == f"{s3_bucket}/models/ede/{v1}/report.html"
    assert first["promoted"] and first["reason"] == "no champion yet"
    champion = registry.read_champion(f"{s3_bucket}/models", "ede")
    assert champion["version"] == v1 and champion["url"] == f"{s3_bucket}/models/ede/{v1}"
    assert first["test"]["auroc"] > 0.9  # anomalies shifted by 3 sd: easy to rank
    report = json.loads(fs.cat_file(f"{s3_bucket}/models/ede/{v1}/report.json"))
    assert report["data"]["sha256"] == first["data_sha256"]
    assert report["best_params"] == first["best_params"] and len(first["best_params"]) == 3
    # the shipped (refitted) model's last epochs, where a loss spike would show
    tail = report["training"]["loss_tail"]
    assert tail["epochs"] == [0, 1, 2] and len(tail["losses"]) == 3
    assert tail["kept_epoch"] in tail["epochs"]
    page = fs.cat_file(f"{s3_bucket}/models/ede/{v1}/report.html").decode()
    assert "training loss, epochs 0-2" in page

    scored = score(input_url=data, output_url=f"{s3_bucket}/scores", storage_url=s3_bucket)
    assert scored["model_url"] == champion["url"] and scored["rows"] == 640
    assert scored["output_url"] == f"{s3_bucket}/scores/model={v1}"  # one prefix per model
    with fs.open(f"{s3_bucket}/scores/model={v1}/table.parquet", "rb") as f:
        out = pd.read_parquet(f)
    assert len(out) == 640 and {"score", "is_anomaly", "label"} <= set(out.columns)
    assert int(out["is_anomaly"].sum()) == scored["anomalies"]
    record = json.loads(fs.cat_file(f"{s3_bucket}/scores/model={v1}/_ede-scored.json"))
    assert record["model"]["url"] == champion["url"]
    assert record["files"]["table.parquet"]["rows"] == 640
    hive = ds.dataset(f"{s3_bucket[5:]}/scores", filesystem=fs, partitioning="hive")
    assert set(hive.to_table(columns=["model"])["model"].to_pylist()) == {v1}

    # Same data again, a far smaller budget and no search: the rule decides, on the same rows.
    # A racing run promotes while this one exports (the first model, republished as
    # "racer"): this run read the pointer before that, so its move is refused, and it
    # compares again with the racer on its own test rows before the rule decides.
    models = f"{s3_bucket}/models"
    real_export = flows.retrain.export

    def export_while_a_racer_promotes(*args, **kwargs):
        meta = real_export(*args, **kwargs)
        racer = {**report, "metrics": {"candidate": first["test"], "champion": first["test"],
                                       "champion_error": None}}  # fmt: skip
        view = registry.champion_view(models, "ede")
        decision, _ = registry.promote(f"{models}/ede/{v1}", models, "ede", "racer", racer, view)
        assert decision.promote
        return meta

    monkeypatch.setattr(flows.retrain, "export", export_while_a_racer_promotes)
    second = retrain(data_url=data, storage_url=s3_bucket, trials=0, **{**SMALL, "epochs": 1})
    monkeypatch.setattr(flows.retrain, "export", real_export)
    v2 = second["version"]
    compared_with = json.loads(fs.cat_file(f"{models}/ede/{v2}/report.json"))
    assert compared_with["previous_champion"]["version"] == "racer"
    assert second["data_sha256"] == first["data_sha256"]
    assert second["champion_test"]["rows"] == first["test"]["rows"]  # the same test split
    assert second["champion_test"]["auroc"] == pytest.approx(first["test"]["auroc"], abs=1e-6)
    expected = second["test"]["auroc"] >= second["champion_test"]["auroc"]
    assert second["promoted"] == expected
    keys = _keys(fs, s3_bucket)
    assert len({k for k in keys if k.startswith("prepared/")}) == 3  # reused, not rewritten
    assert f"models/ede/{v2}/model.onnx" in keys  # published either way
    assert any(k.startswith(f"runs/{v2}/train/") and k.endswith("state.pt") for k in keys)
    now = registry.read_champion(f"{s3_bucket}/models", "ede")
    assert now["version"] == (v2 if expected else "racer")

    # The data lost a feature: the new model is published, not promoted, and says why.
    fewer = f"{s3_bucket}/incoming/fewer.parquet"
    write_anomaly_table(fewer, n_normal=600, n_anomaly=40, d=7)  # f0..f6: no f7
    third = retrain(data_url=fewer, storage_url=s3_bucket, trials=0, **{**SMALL, "epochs": 1})
    assert not third["promoted"] and "missing ['f7']" in third["reason"]
    assert registry.read_champion(f"{s3_bucket}/models", "ede")["version"] == now["version"]


def test_the_flows_process_holds_no_model_and_loads_no_torch(tmp_path, write_anomaly_table):
    """Every step runs in a Ray task (ede.pipeline.steps): a whole run, search included,
    in a fresh process that joins this session's Ray and Prefect, never loads what the
    steps load, not even to unpickle what they return. Its paths are relative to its own
    folder, which Ray's workers do not share: the flow makes them absolute first."""
    import subprocess
    import sys

    import ray
    from prefect.settings import PREFECT_API_URL

    write_anomaly_table(str(tmp_path / "table.parquet"), n_normal=600, n_anomaly=40)
    code = (
        "import json, sys; from flows.retrain import retrain; "
        "s = retrain(data_url='table.parquet', storage_url='store', trials=2, "
        "epochs=2, batch_size=64, quantize_int8=False, min_rows=50); "
        "print(json.dumps([s['promoted'], sorted(m for m in "
        "('torch', 'onnx', 'onnxruntime', 'sklearn') if m in sys.modules)]))"
    )
    env = {
        **os.environ,
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, []]
    assert registry.read_champion(str(tmp_path / "store" / "models"), "ede") is not None


def _models(fs, bucket) -> list[str]:
    fs.invalidate_cache()
    return fs.find(f"{bucket.removeprefix('s3://')}/models")


def test_bad_url_schema_error_and_mid_run_failure_publish_nothing(s3_bucket):
    from flows.retrain import retrain

    fs = s3fs.S3FileSystem()
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        retrain(data_url=f"{s3_bucket}/nope.parquet", storage_url=s3_bucket, **SMALL)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    frame["label"] = 0
    frame["region"] = "eu"
    with fs.open(f"{s3_bucket}/bad/table.parquet", "wb") as f:
        frame.to_parquet(f, index=False)
    with pytest.raises(ValueError, match="'region' is not numeric"):
        retrain(data_url=f"{s3_bucket}/bad/table.parquet", storage_url=s3_bucket, **SMALL)
    # One labelled anomaly: ingest succeeds, then the search has nothing to rank trials by.
    frame = frame.drop(columns="region")
    frame.loc[0, "label"] = 1
    with fs.open(f"{s3_bucket}/one/table.parquet", "wb") as f:
        frame.to_parquet(f, index=False)
    with pytest.raises(ValueError, match="no labelled anomaly to rank by"):
        retrain(data_url=f"{s3_bucket}/one/table.parquet", storage_url=s3_bucket, **SMALL)
    fs.invalidate_cache()
    assert fs.find(f"{s3_bucket.removeprefix('s3://')}/prepared")  # the run got that far
    assert _models(fs, s3_bucket) == []


def test_bad_data_fails_before_ray_starts(s3_bucket, monkeypatch):
    from ede.distributed import cluster
    from flows.retrain import retrain

    def no_ray(**kwargs):
        raise AssertionError("Ray was started before the data were checked")

    monkeypatch.setattr(cluster, "connect", no_ray)
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(100, 2)), columns=["a", "b"])
    frame["label"], frame["region"] = 0, "eu"
    fs = s3fs.S3FileSystem()
    with fs.open(f"{s3_bucket}/early/table.parquet", "wb") as f:
        frame.to_parquet(f, index=False)
    with pytest.raises(ValueError, match="'region' is not numeric"):
        retrain(data_url=f"{s3_bucket}/early/table.parquet", storage_url=s3_bucket, **SMALL)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        retrain(data_url=f"{s3_bucket}/nope.parquet", storage_url=s3_bucket, **SMALL)
    # a label column renamed upstream: before, a model with test AUROC NaN, promoted
    with fs.open(f"{s3_bucket}/renamed/table.parquet", "wb") as f:
        frame.drop(columns="region").rename(columns={"label": "target"}).to_parquet(f)
    with pytest.raises(ValueError, match="table.parquet: no label column 'label'"):
        retrain(data_url=f"{s3_bucket}/renamed/table.parquet", storage_url=s3_bucket, **SMALL)


def test_parameters_are_validated_with_clear_messages():
    from prefect.exceptions import ParameterTypeError

    from flows.retrain import retrain
    from flows.score import score

    good = {"data_url": "s3://b/d.parquet", "storage_url": "s3://b"}
    assert retrain.validate_parameters(good)["trials"] == 4
    for bad, field in (({"trials": -1}, "trials"), ({"name": "Bad/Name"}, "name")):
        with pytest.raises(ParameterTypeError, match=field):
            retrain.validate_parameters({**good, **bad})
    with pytest.raises(ParameterTypeError, match="threads"):
        score.validate_parameters(
            {"input_url": "a", "output_url": "b", "storage_url": "c", "threads": 0}
        )


def test_storage_tasks_retry_transient_errors_and_fail_fast_on_bad_input():
    import botocore.exceptions
    import ray.exceptions
    from prefect import flow, task

    from flows.io_retries import STORAGE_RETRIES

    def throttled() -> OSError:
        err = botocore.exceptions.ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")
        try:
            raise OSError("Please reduce your request rate") from err  # as s3fs raises it
        except OSError as exc:
            return exc

    errors = {
        "reset": lambda: ConnectionError("connection reset"),
        "throttled": throttled,
        "worker lost": lambda: ray.exceptions.WorkerCrashedError(),
        "bad input": lambda: ValueError("column 'x' is not numeric"),
        "a bug": lambda: SyntaxError("invalid syntax"),
        "denied": lambda: PermissionError("s3://b/x: cannot read: access denied"),
    }
    calls = []

    @task(**STORAGE_RETRIES)
    def flaky(kind: str) -> int:
        calls.append(kind)
        if len(calls) == 1:
            raise errors[kind]()
        return len(calls)

    @flow
    def run(kind: str) -> int:
        return flaky(kind)

    for kind in ("reset", "throttled", "worker lost"):
        calls.clear()
        assert run(kind) == 2, kind  # retried once, after a backoff
    for kind, error in (("bad input", ValueError), ("a bug", SyntaxError), ("denied", OSError)):
        calls.clear()
        with pytest.raises(error):
            run(kind)
        assert calls == [kind]  # fails the same way every time: not retried


def test_scoring_flow_loads_neither_ray_nor_torch():
    """A scoring worker imports only what scoring needs (a fresh interpreter, so nothing
    this test session imported counts)."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, flows.score; print([m for m in ('ray', 'torch') if m in sys.modules])"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
