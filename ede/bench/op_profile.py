"""Where an onnxruntime graph spends its time, by operator type.

A throughput figure below the GEMM peak says only that time goes elsewhere; onnxruntime's
own profiler (`SessionOptions.enable_profiling`) times every kernel call, so summing its
"Node" events per op type shows whether the GEMMs, the quantise/requantise steps or
the score's elementwise tail hold the rest, and which kernels a quantised graph really
runs (QGemm vs dequantise-Gemm-quantise).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict

import numpy as np

from ede.export.artifact import INPUT_NAME, session_options


def op_shares(model: bytes, X: np.ndarray, batch: int, threads: int = 1) -> dict:
    """{op type: share of kernel time} over `X` scored in `batch`-row slices, largest first,
    and the kernel time's share of the wall time of `run` calls."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for i in range(0, len(X), batch):
            sess.run(["score"], {INPUT_NAME: X[i : i + batch]})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_op: dict[str, float] = defaultdict(float)
    run_us = 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            run_us += e["dur"]
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {
        "op_share": {op: us / total for op, us in ranked},
        "kernel_share_of_run": total / run_us if run_us else None,
    }
