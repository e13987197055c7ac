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
    drift.add(np.arange(10) + 0.5)  # one score per decile: the reference shares
    assert drift.summary()["value"] == pytest.approx(0.0, abs=1e-12)
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
