"""A retraining run's search and training as one Ray job (`ede train-run`), and its result.

With `EDE_RAY_SUBMIT=jobs` the retraining flow does not drive its longest steps
from its own process: it submits `ede train-run` through the Ray Jobs API
(`ede.distributed.jobs`) and follows it. The job's driver, on the cluster, runs
the very steps the flow would (`ede.pipeline.steps.search` and `.train`) on the
splits the flow's ingest prepared, and writes what they return to
`runs/<version>/training-job.json`: the model folder's URL, threshold and history,
and the search's summary (its table stays in `runs/<version>/tune/results.parquet`).
The flow then reads that file and goes on to export exactly as after a direct run.
Every parameter is on the command line; credentials travel in the job's environment.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from ede.distributed import cluster, jobs
from ede.pipeline import steps
from ede.pipeline.layout import RunLayout
from ede.pipeline.settings import Budget
from ede.storage import read_bytes, read_json, write_json

if TYPE_CHECKING:
    from ede.distributed.tuning_results import SearchSummary

RESULT = "training-job.json"
COMMAND = "train-run"


def result_url(layout: RunLayout) -> str:
    return f"{layout.run_url}/{RESULT}"


def submission_id(layout: RunLayout) -> str:
    """One job per run, named after it: a resubmission of the same run is refused by Ray."""
    return f"ede-train-{layout.version}"


@dataclass(frozen=True)
class TrainingRun:
    """One retraining run's search and training: everything the job is told. The flow
    builds it, `argv` puts it on the job's command line (nothing secret), and
    `ede train-run` parses that line back into it (`from_args`)."""

    prepared: str  # the prepared splits' folder (ingest's `PreparedSplits.root`)
    layout: RunLayout
    budget: Budget
    trials: int
    scaling: cluster.Scaling
    target_fpr: float
    refit: bool

    def argv(self) -> list[str]:
        """`ede train-run` with this run's parameters."""
        budget, scaling = self.budget, self.scaling
        argv = ["ede", COMMAND, "--prepared", self.prepared, "--storage", self.layout.storage]
        argv += ["--version", self.layout.version, "--trials", str(self.trials)]
        argv += ["--seed", str(budget.seed), "--target-fpr", repr(self.target_fpr)]
        argv += ["--workers", str(scaling.workers)]
        argv += ["--cpus-per-worker", repr(scaling.cpus_per_worker)]
        if budget.epochs is not None:
            argv += ["--epochs", str(budget.epochs)]
        if budget.batch_size is not None:
            argv += ["--batch-size", str(budget.batch_size)]
        if scaling.use_gpu:
            argv.append("--gpu")
        if not self.refit:
            argv.append("--no-refit")
        return argv

    @classmethod
    def from_args(cls, args) -> TrainingRun:
        """The run `argv` described, from `ede train-run`'s parsed arguments."""
        return cls(
            prepared=args.prepared,
            layout=RunLayout(args.storage.rstrip("/"), args.version),
            budget=Budget(seed=args.seed, batch_size=args.batch_size, epochs=args.epochs),
            trials=args.trials,
            scaling=cluster.Scaling(args.workers, args.gpu, args.cpus_per_worker),
            target_fpr=args.target_fpr,
            refit=not args.no_refit,
        )


def run_here(run: TrainingRun) -> tuple[SearchSummary | None, steps.TrainedModel]:
    """The job's body: the flow's search and train steps on this job's Ray, result written."""
    from ede.data.ingest import load_prepared

    scaling, layout, budget = run.scaling, run.layout, run.budget
    scaling.check()
    cluster.connect(train_v2=scaling.workers > 1)  # in a Ray job, RAY_ADDRESS is its cluster
    scaling.check_cluster()
    prepared = load_prepared(run.prepared)
    outcome = steps.search(prepared, layout, budget, run.trials, scaling) if run.trials else None
    trained = steps.train(prepared, layout, budget, scaling, run.target_fpr, outcome, run.refit)
    write_result(layout, outcome, trained)
    return outcome, trained


def run_as_job(
    address: str, run: TrainingRun, *, log: jobs.Log, poll_s: float = 1.0
) -> tuple[SearchSummary | None, steps.TrainedModel]:
    """`run_here` as a Ray job at `address`, followed to its end; its result, read back.
    The driver asks for no CPU: its steps hold the cluster's (`ede.pipeline.steps`)."""
    jobs.run(
        address,
        run.argv(),
        submission_id=submission_id(run.layout),
        log=log,
        poll_s=poll_s,
        entrypoint_num_cpus=0,
    )
    return read_result(run.layout)


def write_result(
    layout: RunLayout, outcome: SearchSummary | None, trained: steps.TrainedModel
) -> None:
    search = None
    if outcome is not None:
        search = {f.name: getattr(outcome, f.name) for f in fields(outcome) if f.name != "table"}
    write_json(result_url(layout), {"trained": asdict(trained), "search": search})


def read_result(layout: RunLayout) -> tuple[SearchSummary | None, steps.TrainedModel]:
    """What `write_result` wrote; the search's table from its own Parquet file."""
    import pandas as pd

    from ede.distributed.tuning_results import SearchSummary

    record = read_json(result_url(layout))
    trained = steps.TrainedModel(**record["trained"])
    search = record["search"]
    if search is None:
        return None, trained
    table = pd.read_parquet(io.BytesIO(read_bytes(f"{search['table_url']}.parquet")))
    return SearchSummary(**search, table=table), trained
