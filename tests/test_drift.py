"""Score drift: a batch like the training data stays within range, a shifted one calls for
a retrain, and the score flow triggers the retrain deployment once per cool-down."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ede import ESAD
from ede.export.exporter import export
from ede.scoring.batch import score
from ede.scoring.drift import DRIFT_THRESHOLD, ScoreDrift, psi

FEATURES = ["a", "b", "c", "d"]


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    df.loc[:9, ["a", "b"]] += 5
    df["label"] = (np.arange(n) < 10).astype(int)
    df["c"] += shift  # a feature that moved
    return df


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    df = _frame(2000, seed=0)
    det = ESAD(epochs=3, min_steps=None, hidden=(16, 8), latent_dim=4, seed=0)
    det.fit(df[FEATURES], df["label"])
    out = tmp_path_factory.mktemp("artifact")
    val = _frame(1000, seed=1)
    export(det, str(out), val[FEATURES].to_numpy(), val["label"].to_numpy())
    return out


def test_psi_is_zero_on_the_reference_shares_and_grows_with_a_shift():
    drift = ScoreDrift.for_edges([float(e) for e in range(1, 10)])
    scores = np.arange(10) + 0.5  # one score per decile: the reference shares
    drift.add(scores, scores > 8)
    summary = drift.summary()
    assert summary["value"] == pytest.approx(0.0, abs=1e-12)
    assert summary["above_threshold"] == pytest.approx(0.2)
    assert summary["quantiles"]["p50"] == pytest.approx(np.median(scores))
    assert psi([0, 0, 0, 0, 0, 0, 0, 0, 0, 10]) > 3  # all in the top bin
    assert ScoreDrift.for_edges([]) is None  # a model without reference scores


def _write(df: pd.DataFrame, folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    df.drop(columns="label").to_parquet(folder / "batch.parquet", index=False)
    return str(folder)


def test_a_batch_like_the_training_data_is_within_range_a_shifted_one_drifted(artifact, tmp_path):
    same = score(str(artifact), _write(_frame(3000, seed=2), tmp_path / "a"), str(tmp_path / "o1"))
    moved = _write(_frame(3000, seed=3, shift=3.0), tmp_path / "b")
    shifted = score(str(artifact), moved, str(tmp_path / "o2"))
    assert same.drift["rows"] == 3000 and shifted.drift["rows"] == 3000
    assert same.drift["value"] < 0.1 and not same.drift["drifted"]
    assert shifted.drift["value"] > DRIFT_THRESHOLD and shifted.drift["drifted"]
    assert "score drift PSI" in shifted.line()


@pytest.mark.usefixtures("prefect_harness")
def test_the_score_flow_triggers_the_retrain_once_per_cooldown(artifact, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL

    from flows import serve
    from flows.score import score as score_flow

    stack = serve.Stack(tmp_path / "prefect", PREFECT_API_URL.value())  # the test harness
    serve.create_pools(stack, ["ede-train"])
    deployed = serve.deploy(stack, only=["retrain-weekly"])["retrain-weekly"]
    storage = str(tmp_path / "storage")

    def run(batch: pd.DataFrame, folder: str) -> dict:
        return score_flow(
            input_url=_write(batch, tmp_path / folder),
            output_url=str(tmp_path / "scores"),
            storage_url=storage,
            model_url=str(artifact),
            per_model=False,
            overwrite=True,
            retrain_deployment=deployed,
        )

    def retrains() -> list:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(deployed)
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
            )

    calm = run(_frame(3000, seed=2), "day-1")
    assert not calm["drift"]["drifted"] and calm["retrain_run"] is None and retrains() == []
    moved = run(_frame(3000, seed=3, shift=3.0), "day-2")
    assert moved["drift"]["drifted"] and moved["retrain_run"] is not None
    (triggered,) = retrains()
    assert str(triggered.id) == moved["retrain_run"] and "drift" in triggered.tags
    again = run(_frame(3000, seed=4, shift=3.0), "day-3")  # drifted still, within the week
    assert again["drift"]["drifted"] and again["retrain_run"] is None
    assert len(retrains()) == 1


def _artifact_of(state) -> str:
    """The markdown the score flow run behind `state` published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return artifact.data


def _row(markdown: str, first_cell: str) -> list[str]:
    (line,) = [x for x in markdown.splitlines() if x.startswith(f"| {first_cell} |")]
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.usefixtures("prefect_harness")
def test_the_score_flow_states_drift_per_file_and_its_trend_over_runs(artifact, tmp_path):
    """One input folder, a calm file and one with a shifted feature: each file's drift is
    its own, the artifact says which drifted, and each run joins the prefix's trend."""
    import base64
    import io
    import re

    from matplotlib.image import imread

    from ede.scoring import history
    from flows.score import score as score_flow

    folder = tmp_path / "in"
    folder.mkdir()
    _frame(3000, seed=2).drop(columns="label").to_parquet(folder / "calm.parquet")
    _frame(3000, seed=3, shift=3.0).drop(columns="label").to_parquet(folder / "moved.parquet")
    output = tmp_path / "scores"

    def run():
        state = score_flow(
            input_url=str(folder),
            output_url=str(output),
            storage_url=str(tmp_path / "storage"),
            model_url=str(artifact),
            per_model=False,
            overwrite=True,
            return_state=True,
        )
        return state.result(), _artifact_of(state)

    result, markdown = run()
    files = result["drift"]["files"]
    assert files["calm.parquet"]["psi"] < 0.1 and not files["calm.parquet"]["drifted"]
    assert files["moved.parquet"]["psi"] > DRIFT_THRESHOLD and files["moved.parquet"]["drifted"]
    assert files["calm.parquet"]["rows"] == files["moved.parquet"]["rows"] == 3000
    # the shifted file's scores sit higher, quantile for quantile, and more cross the threshold
    calm_q, moved_q = files["calm.parquet"]["quantiles"], files["moved.parquet"]["quantiles"]
    assert list(calm_q) == ["p1", "p5", "p25", "p50", "p75", "p95", "p99"]
    assert all(moved_q[k] > calm_q[k] for k in calm_q), (calm_q, moved_q)
    assert files["moved.parquet"]["above_threshold"] > 5 * files["calm.parquet"]["above_threshold"]
    calm, moved = _row(markdown, "`calm.parquet`"), _row(markdown, "`moved.parquet`")
    assert calm[3] == f"{files['calm.parquet']['psi']:.3f}" and calm[4] == "within range"
    assert moved[3] == f"{files['moved.parquet']['psi']:.3f}" and moved[4] == "drifted: retrain"
    assert "most drifted moved.parquet" in markdown  # the summary line names it

    for _ in range(2):  # two more runs into the same prefix: the trend lists all three
        result, markdown = run()
    runs = history.read(str(output))
    assert len(runs) == 3 and [r["at"] for r in runs] == sorted(r["at"] for r in runs)
    assert runs[-1]["value"] == pytest.approx(result["drift"]["value"])
    assert "the last 3 run(s)" in markdown
    listed = [line.split("|")[1].strip() for line in markdown.splitlines()
              if re.match(r"\| \d{4}-\d\d-\d\dT", line)]  # fmt: skip
    assert listed == [r["time"] for r in reversed(runs)]  # newest first
    (png,) = re.findall(r"\]\(data:image/png;base64,([^)]+)\)", markdown)
    pixels = imread(io.BytesIO(base64.b64decode(png)))
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05


def test_the_history_keeps_the_last_runs_in_order(tmp_path):
    from ede.scoring import history

    for i in range(history.KEEP + 5):
        kept = history.append(str(tmp_path), {"at": float(i), "value": 0.0})
    assert [r["at"] for r in kept] == [float(i) for i in range(5, history.KEEP + 5)]
    assert history.read(str(tmp_path)) == kept
    (tmp_path / history.HISTORY_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="_ede-drift.json: not valid JSON"):
        history.read(str(tmp_path))


def test_a_run_whose_history_write_fails_leaves_its_drift_to_its_retry(
    artifact, tmp_path, monkeypatch
):
    """The outputs are committed, then the history write fails (storage gone): the
    retry finds every file done, yet the run's drift reaches the history, once."""
    import json

    from ede.scoring import history
    from ede.scoring.record import PENDING, RECORD_FILE

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        _frame(1500, seed=10 + i).drop(columns="label").to_parquet(folder / f"p{i}.parquet")
    out = tmp_path / "out"
    append = history.append

    def unreachable(*args, **kwargs):
        raise ConnectionError("endpoint unreachable")

    monkeypatch.setattr(history, "append", unreachable)
    with pytest.raises(ConnectionError):
        score(str(artifact), str(folder), str(out))
    assert sorted(p.name for p in out.glob("*.parquet")) == ["p0.parquet", "p1.parquet"]
    assert history.read(str(out)) == []
    monkeypatch.setattr(history, "append", append)
    retry = score(str(artifact), str(folder), str(out))
    assert (retry.files, retry.skipped, retry.rows) == (0, 2, 0)
    (run,) = history.read(str(out))
    assert run["rows"] == 3000 and set(run["files"]) == {"p0.parquet", "p1.parquet"}
    assert retry.history == [run]
    assert not json.loads((out / RECORD_FILE).read_text()).get(PENDING)
    score(str(artifact), str(folder), str(out))  # nothing pending, nothing scored
    assert history.read(str(out)) == [run]
