"""Where `ede tune`'s fixed cost goes: its steps, timed one by one in one process.

The steps `ede tune --trials 8 --no-refit` runs (cardio's training split as in
`benchmarks/tune_overhead.py`): importing ESAD and the search, `cluster.connect`
(a local Ray), `tuning.search`, with Tune's own `Tuner.fit` timed inside it, and
`ray.shutdown`. `--reports N` changes the reports per trial (default: SearchSpec's).

    .venv/bin/python benchmarks/tune_timeline.py --data-dir ../shared/data/odds [--reports 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tune_overhead import write_cardio  # noqa: E402 (a sibling script)

STARTED = time.perf_counter()


def mark(step: str) -> None:
    print(f"{time.perf_counter() - STARTED:6.2f} s  {step}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--reports", type=int, default=None)
    p.add_argument("--write", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:  # in a child: this process's imports stay cold for the timing
        write_cardio(Path(args.data_dir) / "cardio.npz", args.write)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/cardio.parquet"
        cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--write", data]
        subprocess.run(cmd, check=True)
        global STARTED
        STARTED = time.perf_counter()
        from ede.core.estimator import ESAD
        from ede.distributed import cluster, tuning

        mark("imports (ESAD, the search)")
        fit = tuning.tune.Tuner.fit

        def timed_fit(self):
            mark("Tuner.fit starts")
            try:
                return fit(self)
            finally:
                mark("Tuner.fit returns")

        tuning.tune.Tuner.fit = timed_fit
        storage = cluster.storage_path(f"{tmp}/ray")
        cluster.connect(train_v2=False)
        mark("cluster.connect (local Ray)")
        extra = {} if args.reports is None else {"reports": args.reports}
        spec = tuning.SearchSpec(trials=8, refit=False, verbose=0, **extra)
        tuning.search(ESAD(seed=0), data, storage, spec, cluster.Scaling(), experiment="t")
        mark("search returns")
        import ray

        ray.shutdown()
        mark("ray.shutdown")


if __name__ == "__main__":
    main()
