"""Which int8 quantisation of the exported graph scores fastest, at what AUROC (issue 13).

One fitted default MLP (as `ede bench score` fits it) and its fp32 graph; onnxruntime's
dynamic quantisation (what `model.int8.onnx` is) and static variants calibrated on the
4,000 validation rows the export saw: QDQ with s8 or u8 activations, quantising the
Gemms alone or the LeakyRelus too, and the QOperator format. rows/s on 65,536 rows per
trial at batch 4096, one thread, in interleaved rounds timed in that thread's CPU time
(best counts); AUROC on 200,000 other rows of the bench table; the op types
onnxruntime's optimised graph runs.
Writes JSON to argv[1]; argv[2]: rounds (10).

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/quantisation_variants.py out.json
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from ede.bench.scoring import fit_model, make_table
from ede.core.metrics import evaluate
from ede.data.protocol import validation_split
from ede.export.artifact import read_model, session, session_options
from ede.export.onnx_graph import _quantizing, _Rows

ROWS, BATCH = 65536, 4096
U8, S8 = QuantType.QUInt8, QuantType.QInt8
VARIANTS = {
    "static QDQ s8s8, Gemm": dict(activation_type=S8, op_types_to_quantize=["Gemm"]),
    "static QDQ u8s8, Gemm": dict(activation_type=U8, op_types_to_quantize=["Gemm"]),
    "static QDQ s8s8, Gemm+LeakyRelu": dict(
        activation_type=S8, op_types_to_quantize=["Gemm", "LeakyRelu"]
    ),
    "static QDQ u8s8, Gemm+LeakyRelu (shipped)": dict(
        activation_type=U8, op_types_to_quantize=["Gemm", "LeakyRelu"]
    ),
    "static QOperator u8s8, Gemm+LeakyRelu": dict(
        activation_type=U8,
        op_types_to_quantize=["Gemm", "LeakyRelu"],
        quant_format=QuantFormat.QOperator,
    ),
}


def static(model: bytes, X_cal: np.ndarray, **kw) -> bytes:
    args = dict(quant_format=QuantFormat.QDQ, per_channel=True, weight_type=S8)
    args.update(calibrate_method=CalibrationMethod.MinMax, **kw)
    with _quantizing(model) as (pre, dst):
        quantize_static(pre, dst, _Rows(X_cal), **args)
        with open(dst, "rb") as f:
            return f.read()


def ops(model: bytes) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(1)
        opts.optimized_model_filepath = f"{tmp}/opt.onnx"
        ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        return sorted({n.op_type for n in onnx.load(f"{tmp}/opt.onnx").graph.node})


def main(out: str, rounds: int = 10) -> None:
    X, y = make_table(300_000)
    with tempfile.TemporaryDirectory() as tmp:
        fit_model(X, y, f"{tmp}/m", 1)
        models = {
            "fp32": read_model(f"{tmp}/m")[0],
            "dynamic (model.int8.onnx)": read_model(f"{tmp}/m", "int8")[0],
        }
    n = 20_000  # fit_model's validation rows: the calibration set
    _, _, X_val, _ = validation_split(X[:n], y[:n] * (np.arange(n) % 2), fraction=0.2, seed=0)
    for name, kw in VARIANTS.items():
        models[name] = static(models["fp32"], X_val, **kw)
    sessions = {k: session(m) for k, m in models.items()}
    rows = X[:ROWS]

    def go(s):
        for i in range(0, ROWS, BATCH):
            s.run(["score"], {"x": rows[i : i + BATCH]})

    best = dict.fromkeys(sessions, 0.0)
    load_before = os.getloadavg()[0]
    for s in sessions.values():
        go(s)
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.thread_time()
            go(s)
            best[k] = max(best[k], ROWS / (time.thread_time() - t))
    X_eval, y_eval = X[100_000:300_000], y[100_000:300_000]
    auroc = {}
    for k, s in sessions.items():
        sc = np.concatenate(
            [
                s.run(["score"], {"x": X_eval[i : i + BATCH]})[0]
                for i in range(0, len(X_eval), BATCH)
            ]
        )
        auroc[k] = evaluate(y_eval, sc)["auroc"]
    report = {
        "rows_per_trial": ROWS,
        "batch": BATCH,
        "rounds": rounds,
        "threads": 1,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "onnxruntime": ort.__version__,
        "variants": {
            k: {
                "rows_per_s": best[k],
                "vs_fp32": best[k] / best["fp32"],
                "auroc": auroc[k],
                "auroc_drop_points": 100 * (auroc["fp32"] - auroc[k]),
                "bytes": len(models[k]),
                "ops": ops(models[k]),
            }
            for k in sessions
        },
    }
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    for k, v in report["variants"].items():
        print(
            f"| {k} | {v['rows_per_s']:,.0f} | {v['vs_fp32']:.2f} | {v['auroc_drop_points']:+.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
