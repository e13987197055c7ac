"""The production path as a benchmark: the retraining flow on the ODDS protocol's splits.

`ede bench odds` measures ESAD fitted in process with its defaults; users, though, get
what `flows/retrain.py` delivers (its own validation carve, the Ray Tune search, the
final model, the ONNX export, onnxruntime scoring). This script runs that flow, with
the parameters a schedule would pass (none but the data, the storage and the seed), on
exactly the split `ede bench odds` builds for each data set and seed, and in the same
process scores the in-process methods on the same split, so the two can be compared row
for row. The flow lives outside the library, hence a script and not an `ede bench`.

    .venv/bin/python benchmarks/pipeline_odds.py --data-dir ../shared/data/odds \
        --gamma-l 0.05 --seeds 5 --json pipeline-odds-0.05.json

Prints one progress line per (dataset, seed, method) on stderr and the markdown table
of `ede bench odds`, with an `esad_pipeline` column, on stdout. The pipeline's "fit
seconds" are a whole flow run's wall time: ingest, search, export and evaluation (and,
in the first run, the start of Prefect's ephemeral server).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import inspect
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # flows/ is not installed; run from anywhere

PIPELINE = "esad_pipeline"
# The in-process rows beside the pipeline: ESAD's defaults and the peers (ae_ablation on demand).
DEFAULT_METHODS = ("esad", "deepsad_deepod", "iforest", "hgb_supervised", "catboost_supervised")
# The flow parameters the report records, as the flow declares them today.
FLOW_KNOBS = (
    "trials",
    "epochs",
    "batch_size",
    "workers",
    "validation_fraction",
    "target_fpr",
    "refit",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder of <dataset>.npz (keys X, y)")
    p.add_argument("--datasets", type=_comma_list, default=None, help="comma list (default: all 5)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--gamma-l", type=float, default=0.05, help="share of labelled anomalies")
    p.add_argument("--gamma-p", type=float, default=0.0, help="pollution of unlabelled data")
    p.add_argument(
        "--methods",
        type=_comma_list,
        default=None,
        help=f"in-process methods beside the pipeline (default: {','.join(DEFAULT_METHODS)})",
    )
    p.add_argument("--json", required=True, help="where to write the report")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="smoke tests only: override the flow's search trials (default: the flow's own)",
    )
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep each run's data and storage")
    return p.parse_args(argv)


def _comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def quiet_offline_env(root: Path) -> None:
    """Before Prefect is imported: the demo's offline settings (a private PREFECT_HOME under
    `root`, no telemetry, a patient ephemeral server), console logs at WARNING so progress
    lines stay readable (Tune's too), and one thread per pool, as `ede bench odds` runs. Each yields
    to the environment."""
    from flows.demo import _offline_defaults

    _offline_defaults(root)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Tune warns at every trial checkpoint that snapshots come often; one line per epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def write_split(split, data: Path) -> str:
    """The split as the flow's given-splits layout: train/ (label 1 = labelled anomaly, 0 =
    unlabelled) and test/ (label = true anomaly); no val/, so the flow carves its own."""
    import numpy as np
    import pandas as pd

    for part, X, y in (
        ("train", split.X_train, split.y_train),
        ("test", split.X_test, split.y_test),
    ):
        frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
        frame["label"] = np.asarray(y, dtype=np.int64)
        (data / part).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(data / part / "part.parquet", index=False)
    return str(data)


def flow_parameters(retrain, trials: int | None) -> dict:
    """What the flow will run with: its declared defaults, read at run time (they are
    tuned elsewhere), and the smoke-test override if any."""
    params = inspect.signature(retrain.fn).parameters
    knobs = {k: params[k].default for k in FLOW_KNOBS if k in params}
    if trials is not None:
        knobs["trials"] = trials
    knobs["estimator"] = _flow_budget(knobs)
    return knobs


def _flow_budget(knobs: dict) -> dict:
    """The training budget those knobs resolve to, from the library call the flow makes,
    so a report says how long the shipped model trained even when the flow leaves
    `epochs` and `batch_size` to ESAD."""
    from ede.pipeline import settings

    det = settings.base_estimator(
        seed=0, batch_size=knobs.get("batch_size"), epochs=knobs.get("epochs")
    )
    return {k: det.get_params()[k] for k in ("epochs", "min_steps", "max_steps", "batch_size")}


def run_pipeline(retrain, name: str, seed: int, split, root: Path, trials: int | None) -> dict:
    """One scheduled retrain on this split, in a fresh storage (so no champion to beat)."""
    data_url = write_split(split, root / "data")
    overrides = {} if trials is None else {"trials": trials}
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Tune's banners; stdout is the report's
        out = retrain(data_url=data_url, storage_url=str(root / "storage"), seed=seed, **overrides)
    seconds = time.perf_counter() - start
    test = out["test"]
    if test["rows"] != len(split.y_test):  # the flow must score the protocol's test rows
        raise RuntimeError(
            f"{name} seed {seed}: flow scored {test['rows']} test rows, "
            f"the split has {len(split.y_test)}"
        )
    row = {"dataset": name, "method": PIPELINE, "seed": seed, "fit_seconds": seconds}
    row.update(auroc=test["auroc"], auprc=test["auprc"], wall_seconds=seconds)
    row.update(flow_seconds=out["seconds"], best_params=out["best_params"])
    return row


@dataclass(frozen=True)
class Plan:
    """What a run will do, settled before Ray starts so that bad arguments cost nothing."""

    datasets: list[str]
    methods: list[str]
    splits: Iterator
    parameters: dict


def plan(args: argparse.Namespace, retrain) -> Plan:
    """ValueError naming the bad method, data set or flow parameter."""
    from ede.bench import odds

    datasets = args.datasets or list(odds.ODDS_DATASETS)
    methods = args.methods or list(DEFAULT_METHODS)
    odds.check_methods(methods)
    splits = odds.protocol_splits(args.data_dir, datasets, args.seeds, args.gamma_l, args.gamma_p)
    return Plan(datasets, methods, splits, flow_parameters(retrain, args.trials))


def run(args: argparse.Namespace, todo: Plan, retrain, work: Path) -> dict:
    """Every (dataset, seed): the flow, then the in-process methods, on one split."""
    from ede.bench import odds
    from ede.distributed import cluster

    cluster.connect()  # once: each flow's ray_session joins it and leaves it running
    results = []
    for name, seed, split in todo.splits:
        root = work / "runs" / f"{name}-{seed}"
        results.append(run_pipeline(retrain, name, seed, split, root, args.trials))
        _log(odds.progress_line(results[-1], split))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        results += odds.score_split(name, seed, split, todo.methods, _log)
    methods = [PIPELINE, *todo.methods]
    protocol = odds.protocol(todo.datasets, args.seeds, args.gamma_l, args.gamma_p, methods)
    protocol["pipeline"] = {
        "flow": "flows.retrain.retrain(data_url, storage_url, seed)",
        "parameters": todo.parameters,
        "trials_override": args.trials,
        "splits": "given train/ and test/; validation carved from train/ by the flow",
    }
    return {"protocol": protocol, "results": results, "summary": odds.summarise(results)}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ede-pipeline-odds-")).resolve()
    if args.work_dir is None and not args.keep:
        # Registered before Prefect is imported, so it runs after Prefect's own exit
        # handlers have stopped the ephemeral server whose database lives in `work`.
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    quiet_offline_env(work)
    import ray
    import torch

    from ede.bench.odds import markdown
    from ede.storage import write_json
    from flows.retrain import retrain

    torch.set_num_threads(1)
    try:
        todo = plan(args, retrain)
    except ValueError as exc:  # bad arguments: one line, as `ede bench odds` says it
        print(f"pipeline_odds: error: {exc}", file=sys.stderr)
        return 2
    try:
        report = run(args, todo, retrain, work)
    finally:
        ray.shutdown()
    write_json(args.json, report)
    knobs = report["protocol"]["pipeline"]["parameters"]
    source = "defaults" if args.trials is None else f"defaults, trials={args.trials} (smoke)"
    print(f"esad_pipeline: flows.retrain {source}: {knobs}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
