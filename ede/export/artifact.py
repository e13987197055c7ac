"""The exported model folder, as a reader sees it: file names, metadata, integrity.

Layout (docs/design.md): `model.onnx`, optional `model.int8.onnx` and
`model.int8-static.onnx`, and `metadata.json`,
written last so its presence marks a complete export. A reader checks the
sha256 that metadata.json records before it loads a graph: a model swapped,
half-copied or re-exported under an old metadata file is refused, not used.

onnxruntime is imported only when a session is built, so the training side can
import the constants here without pulling the runtime in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ede.data.tables import IMAGE_COLUMN  # noqa: F401 - re-exported for readers
from ede.storage import read_bytes, shown_url

MODEL_FILE, INT8_FILE, METADATA_FILE = "model.onnx", "model.int8.onnx", "metadata.json"
INT8_STATIC_FILE = "model.int8-static.onnx"
FORMAT = "ede.onnx/1"
INPUT_NAME, OUTPUT_NAMES = "x", ("score", "is_anomaly")
# The quantised graphs an export may add (`ede export --quantize`): "int8", onnxruntime's
# dynamic quantisation; "int8-static", static QDQ calibrated on the validation rows.
QUANTIZED = {"int8": INT8_FILE, "int8-static": INT8_STATIC_FILE}
VARIANTS = {"fp32": MODEL_FILE, **QUANTIZED}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_metadata(folder: str) -> dict[str, Any]:
    url = f"{folder.rstrip('/')}/{METADATA_FILE}"
    try:
        meta = json.loads(read_bytes(url))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}; run `ede export` first") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{shown_url(url)}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{shown_url(url)}: not an ede export (format {FORMAT!r} expected)")
    return meta


def read_model(folder: str, variant: str = "fp32") -> tuple[bytes, dict[str, Any]]:
    """The graph's bytes, verified against metadata.json, and the metadata."""
    if variant not in VARIANTS:
        raise ValueError(f"model variant {variant!r}: expected one of {sorted(VARIANTS)}")
    meta = read_metadata(folder)
    name = VARIANTS[variant]
    recorded = meta.get("files", {}).get(name, {}).get("sha256")
    url = f"{folder.rstrip('/')}/{name}"
    if recorded is None:
        raise ValueError(f"{shown_url(url)}: not listed in {METADATA_FILE}; export with it first")
    data = read_bytes(url)
    got = sha256(data)
    if got != recorded:
        raise ValueError(
            f"{shown_url(url)}: sha256 {got[:16]}... does not match {METADATA_FILE} "
            f"({recorded[:16]}...); the model was changed after export, re-export it"
        )
    return data, meta


def session_options(threads: int = 1):
    """The one place onnxruntime's session settings live (scorer, export checks, benches).

    `threads` intra-op threads, no inter-op pool: on a shared machine 2+ spinning threads
    collapse when a core is taken (50-100x, measured); onnxruntime degrades least.
    Everything else stays at onnxruntime's defaults (all graph optimisations, memory
    arena and pattern, spinning): `ede bench score`'s side-by-side trials of optimisation
    levels, arena and pattern off, spinning off and I/O binding moved fp32 rows/s by no
    more than the noise between rounds (README, scoring benchmark); only the batch size
    mattered (INFERENCE_ROWS).
    """
    import onnxruntime as ort

    if threads < 1:
        raise ValueError(f"threads={threads}: must be >= 1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def session(model: bytes, threads: int = 1):
    """One onnxruntime CPU session with `session_options(threads)`."""
    import onnxruntime as ort

    opts = session_options(threads)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


INFERENCE_ROWS = 512  # rows per onnxruntime call (see infer)


def infer(sess, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score in slices of INFERENCE_ROWS: the default MLP's widest activations for 512 rows
    (512 x 128 floats, 256 kB) stay in a core's L2. Side by side on one thread
    (benchmarks/ort_session_options.py), 512-row slices ran at 0.89 of the fp32 GEMM
    peak against 0.62 at 4096 rows on an AVX2 CPU with a 512 kB L2, and 512 to 2,048
    rows were the best (0.56-0.57 against 0.51) on an AVX-512 Xeon with a 2 MB L2."""
    if len(X) <= INFERENCE_ROWS:
        return sess.run(list(OUTPUT_NAMES), {INPUT_NAME: X})
    parts = [
        sess.run(list(OUTPUT_NAMES), {INPUT_NAME: X[i : i + INFERENCE_ROWS]})
        for i in range(0, len(X), INFERENCE_ROWS)
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
