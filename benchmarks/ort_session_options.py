"""Which onnxruntime settings move the exported fp32 graph's rows/s (issue 13).

One fitted default MLP (as `ede bench score` fits it), scored on 65,536 rows per trial
by sessions that differ in one setting each from `ede.export.artifact.session_options`:
graph optimisation level, memory arena, memory pattern, intra-op spinning, I/O
binding, and the batch (rows per `run`). Every trial and two torch fp32 GEMMs run in
interleaved rounds on one thread, timed in that thread's CPU time (as `ede bench
score` times them); the best round of each counts, so a load burst on the shared
machine hits them all. Writes JSON to argv[1]; argv[2]: rounds (15).

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/ort_session_options.py out.json
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch

from ede.bench.scoring import fit_model, make_table, numpy_chain
from ede.export.artifact import read_model, session_options

ROWS = 65536
L = ort.GraphOptimizationLevel


def make_session(model: bytes, level=None, arena=True, pattern=True, spin=None):
    opts = session_options(1)
    if level is not None:
        opts.graph_optimization_level = level
    opts.enable_cpu_mem_arena, opts.enable_mem_pattern = arena, pattern
    if spin is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def runner(sess, rows: np.ndarray, batch: int, iobinding: bool = False):
    parts = [np.ascontiguousarray(rows[i : i + batch]) for i in range(0, len(rows), batch)]
    if iobinding:
        bind = sess.io_binding()

        def one(p):
            bind.bind_cpu_input("x", p)
            bind.bind_output("score")
            sess.run_with_iobinding(bind)
    else:

        def one(p):
            sess.run(["score"], {"x": p})

    return lambda: [one(p) for p in parts]


def main(out: str, rounds: int = 15) -> None:
    torch.set_num_threads(1)
    X, y = make_table(100_000)
    with tempfile.TemporaryDirectory() as tmp:
        det, _ = fit_model(X, y, f"{tmp}/m", 1)
        fp32, _ = read_model(f"{tmp}/m")
    _, flops = numpy_chain(det)
    rows, base = X[:ROWS], make_session(fp32)
    trials = {
        "default (all optimisations), batch 4096": runner(base, rows, 4096),
        "ORT_ENABLE_EXTENDED": runner(make_session(fp32, L.ORT_ENABLE_EXTENDED), rows, 4096),
        "ORT_ENABLE_BASIC": runner(make_session(fp32, L.ORT_ENABLE_BASIC), rows, 4096),
        "ORT_DISABLE_ALL": runner(make_session(fp32, L.ORT_DISABLE_ALL), rows, 4096),
        "memory arena off": runner(make_session(fp32, arena=False), rows, 4096),
        "memory pattern off": runner(make_session(fp32, pattern=False), rows, 4096),
        "allow_spinning 0": runner(make_session(fp32, spin="0"), rows, 4096),
        "I/O binding": runner(base, rows, 4096, iobinding=True),
    }
    for b in (512, 1024, 2048, 8192, 16384, 65536):
        trials[f"batch {b}"] = runner(base, rows, b)
    a, w = torch.randn(4096, 128), torch.randn(128, 128)
    big_a, big_b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemms = {
        "torch fp32 GEMM 4096x128x128": (
            lambda: [a @ w for _ in range(16)],
            16 * 2 * 4096 * 128**2,
        ),
        "torch fp32 GEMM 2048 square": (lambda: big_a @ big_b, 2 * 2048**3),
    }
    best = dict.fromkeys([*trials, *gemms], 0.0)
    for fn in trials.values():
        fn()
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for k, fn in trials.items():
            t = time.thread_time()
            fn()
            best[k] = max(best[k], ROWS * flops / (time.thread_time() - t) / 1e9)
        for k, (fn, fl) in gemms.items():
            t = time.thread_time()
            fn()
            best[k] = max(best[k], fl / (time.thread_time() - t) / 1e9)
    peak = max(best[k] for k in gemms)
    report = {
        "rows_per_trial": ROWS,
        "rounds": rounds,
        "threads": 1,
        "flops_per_row": flops,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "onnxruntime": ort.__version__,
        "gflops": best,
        "rows_per_s": {k: v * 1e9 / flops for k, v in best.items() if k in trials},
        "vs_fp32_gemm_peak": {k: v / peak for k, v in best.items()},
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    for k, v in best.items():
        print(f"| {k} | {v:.1f} | {v / peak:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
