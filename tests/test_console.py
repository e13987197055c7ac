"""A failed flow run, as an operator sees it: one summary line naming the task and the
cause, no traceback on the console, the tracebacks in the debug log."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd

from flows.run import parse


def test_parameters_read_as_json_where_they_can():
    assert parse(["trials=0", "refit=false", "since=null", "data_url=s3://b/x/"]) == {
        "trials": 0,
        "refit": False,
        "since": None,
        "data_url": "s3://b/x/",
    }


def test_a_failed_retrain_ends_in_one_line_naming_the_task_and_the_cause(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    frame["label"] = (rng.random(400) < 0.05).astype(int)
    frame.loc[17, "b"] = np.nan  # passes the schema check, fails ingest's values check
    (tmp_path / "data").mkdir()
    frame.to_parquet(tmp_path / "data" / "t.parquet")
    debug_log = tmp_path / "debug.log"
    cmd = [sys.executable, "-m", "flows.run", "retrain", f"data_url={tmp_path / 'data'}/"]
    cmd += [f"storage_url={tmp_path / 'store'}", "trials=0", "epochs=1"]
    env = {**os.environ, "EDE_DEBUG_LOG": str(debug_log)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    console = out.stdout + out.stderr
    assert out.returncode == 1, console[-3000:]
    summary = [line for line in console.splitlines() if "ede-retrain failed" in line]
    assert len(summary) == 1, console[-3000:]
    assert "in task 'ingest': ValueError:" in summary[0] and "column 'b'" in summary[0]
    assert "row 17" in summary[0] and str(debug_log) in summary[0]
    assert "Traceback" not in console, console[-3000:]
    assert len(console.splitlines()) < 30, console
    logged = debug_log.read_text()
    assert "Traceback (most recent call last)" in logged and "column 'b'" in logged
    assert not (tmp_path / "store" / "models").exists()  # nothing published
