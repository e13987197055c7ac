"""What a search costs beyond its training: `ede tune` against the same fits in process.

Writes cardio's training split (Deep SAD's protocol, seed 0; the test rows stay out) as
Parquet, times the whole command a user runs,

    ede tune --data cardio.parquet --storage DIR --trials 8 --no-refit

(2 trials at a time on this 2-core machine: Tune fills the CPUs), reads its results
table, then fits every trial's configuration in this process on the very fit rows the
trials trained on (the same validation carve, one torch thread, as a trial has) and
reports side by side, in one run:

- the command's wall time, and the limit the issue sets for it:
  1.5 x (sum of the in-process fits / 2 concurrent) + 15 s;
- per trial: Tune's wall time, the in-process fit's, and their difference (the
  per-trial overhead: actor start, data read, reports and checkpoints).

    .venv/bin/python benchmarks/tune_overhead.py --data-dir ../shared/data/odds [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONCURRENT = 2


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding cardio.npz")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from ede.core.estimator import ESAD
    from ede.data.protocol import validation_split

    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/cardio.parquet"
        frame = write_cardio(Path(args.data_dir) / "cardio.npz", data)
        names = [c for c in frame.columns if c != "label"]
        cmd = [str(Path(sys.executable).with_name("ede")), "tune", "--data", data, "--storage",
               f"{tmp}/ray", "--trials", str(args.trials), "--no-refit",
               "--experiment", "overhead"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        command_s = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"ede tune failed:\n{done.stderr[-2000:]}")
        table = pd.read_parquet(f"{tmp}/ray/overhead/results.parquet")

    # The rows a trial trains on: `ede tune`'s carve (20%, seed 0) of the same table.
    X_fit, y_fit, _, _ = validation_split(
        frame[names].to_numpy(), frame["label"].to_numpy(), fraction=0.2, seed=0
    )
    torch.set_num_threads(1)
    trials = []
    for row in table.to_dict(orient="records"):
        params = {k: row[k] for k in ("lambda_entropy", "lambda_consistency", "eta") if k in row}
        start = time.perf_counter()
        ESAD(seed=0, **params).fit(X_fit, y_fit)
        fit_s = time.perf_counter() - start
        wall = float(row["wall_s"])
        trials.append({**params, "tune_wall_s": wall, "in_process_fit_s": fit_s,
                       "overhead_s": wall - fit_s, "defaults": bool(row["defaults"])})  # fmt: skip
    fits = sum(t["in_process_fit_s"] for t in trials)
    limit = 1.5 * fits / CONCURRENT + 15.0
    report = {
        "command": " ".join(["ede", *cmd[1:]]),
        "command_wall_s": command_s,
        "sum_in_process_fit_s": fits,
        "limit_s": limit,
        "command_over_limit": command_s / limit,
        "mean_overhead_per_trial_s": sum(t["overhead_s"] for t in trials) / len(trials),
        "trials": trials,
        "load_average": os.getloadavg(),
    }
    for t in trials:
        mark = "  (defaults)" if t["defaults"] else ""
        print(f"trial: Tune {t['tune_wall_s']:5.1f} s, in process {t['in_process_fit_s']:5.1f} s, "
              f"overhead {t['overhead_s']:5.1f} s{mark}")  # fmt: skip
    print(f"ede tune, {len(trials)} trials, {CONCURRENT} at a time: {command_s:.1f} s; limit "
          f"1.5 x {fits:.1f} s / {CONCURRENT} + 15 s = {limit:.1f} s; ratio "
          f"{command_s / limit:.2f}; mean overhead per trial "
          f"{report['mean_overhead_per_trial_s']:.1f} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def write_cardio(npz: Path, url: str):
    """cardio's training split under the benchmark protocol (seed 0) as one Parquet file,
    features f0..f20 and the label; returns the frame written."""
    import numpy as np
    import pandas as pd

    from ede.bench.odds import load_npz
    from ede.data.protocol import semi_supervised_split

    X, y = load_npz(npz)
    split = semi_supervised_split(X, y, seed=0)
    names = [f"f{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(split.X_train.astype(np.float32), columns=names)
    frame["label"] = split.y_train
    frame.to_parquet(url, index=False)
    return frame


if __name__ == "__main__":
    main()
