"""ONNX export of a fitted ESAD: one self-contained graph, so scoring needs no torch.

The graph is an inference wrapper, not the training net (DESIGN.md, style 8):
affine scaling, the three networks, the score with its scales, and the threshold,
all as registered buffers. Raw rows in (`x`, float32, (batch, *input_shape));
`score` (float32, (batch,), higher = more anomalous) and `is_anomaly` (bool,
score > threshold) out.

Exporter: torch.onnx's dynamo exporter (needs onnxscript), one file
(`external_data=False`); if it fails, the TorchScript exporter, and metadata
says which ran.

Nothing is written until every check passed: `onnx.checker`, then parity,
onnxruntime's scores against `ESAD.decision_function` on the validation rows,
max relative difference <= 1e-4. The threshold is re-calibrated on the same rows
(`ede.export.calibration`). `int8` adds onnxruntime's dynamic quantisation (int8
weights, activations quantised per batch at run time) after its pre-processing,
reported as size ratio and validation AUROC change. metadata.json goes last.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator

import fsspec
import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ede import __version__
from ede.core.checks import check_shape, check_X, check_y
from ede.core.estimator import ESAD
from ede.core.model import InferenceWrapper
from ede.data.provenance import (
    VALIDATION_FILE,
    read_provenance,
    read_validation,
    rows_sha256,
)
from ede.export.artifact import (
    FORMAT,
    IMAGE_COLUMN,
    INPUT_NAME,
    INT8_FILE,
    METADATA_FILE,
    MODEL_FILE,
    OUTPUT_NAMES,
    session,
    sha256,
)
from ede.export.calibration import DEFAULT_TARGET_FPR, calibrate_threshold, operating_metrics
from ede.storage import shown_url, write_bytes_atomic

PARITY_TOLERANCE = 1e-4
QUANTIZE_CHOICES = ("int8",)


def inference_wrapper(det: ESAD, threshold: float) -> InferenceWrapper:
    net = copy.deepcopy(det.net_).cpu().eval()
    return InferenceWrapper(net, det.scaler_.offset_, det.scaler_.scale_, threshold).eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters warn about things that do not concern users (torchvision ops...)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def to_onnx(wrapper: InferenceWrapper, input_shape: tuple[int, ...]):
    """(onnx.ModelProto, exporter name), batch axis dynamic."""
    import onnx

    example = torch.zeros(2, *input_shape)  # batch 2: torch.export specialises sizes 0 and 1
    names = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES)}
    with _quiet():
        try:
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                external_data=False,
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                verbose=False,
                **names,
            )
            return program.model_proto, "dynamo"
        except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other one
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        buf = io.BytesIO()
        batch = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
        torch.onnx.export(
            wrapper, (example,), buf, dynamo=False, dynamic_axes=batch, opset_version=17, **names
        )
    return onnx.load_from_string(buf.getvalue()), f"torchscript (dynamo failed: {reason})"


def _with_props(model: bytes, props: dict[str, str]) -> bytes:
    """Metadata props travel inside the graph: an edge box may get the .onnx alone."""
    import onnx

    proto = onnx.load_from_string(model)
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = "ESAD anomaly detector: raw rows in; score (higher = more anomalous), "
    proto.doc_string += "is_anomaly = score > threshold out. See metadata_props."
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def quantize_int8(model: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src, pre, dst = (os.path.join(tmp, n) for n in ("a.onnx", "b.onnx", "c.onnx"))
        with open(src, "wb") as f:
            f.write(model)
        quant_pre_process(src, pre)
        quantize_dynamic(pre, dst, weight_type=QuantType.QInt8)
        with open(dst, "rb") as f:
            return f.read()


def _run(model: bytes, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score, flag = session(model).run(list(OUTPUT_NAMES), {INPUT_NAME: X})
    return score, flag


def export(
    det: ESAD,
    out: str,
    X_val,
    y_val,
    *,
    target_fpr: float = DEFAULT_TARGET_FPR,
    quantize: str | None = None,
    provenance: dict | None = None,
) -> dict:
    """Export `det` to the folder `out`; returns the metadata written beside the graph.

    `y_val`: 1 = labelled anomaly, 0 = normal or unlabelled (the threshold's normals).
    """
    check_is_fitted(det, "net_")
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ValueError(f"quantize={quantize!r}: expected one of {QUANTIZE_CHOICES}")
    X_val = check_X(X_val, "validation X")
    check_shape(X_val, det.input_shape_, "validation X")
    y_val = check_y(y_val, len(X_val), "validation y")
    torch_scores = det.decision_function(X_val).astype(np.float32)
    cal = calibrate_threshold(torch_scores, y_val, target_fpr)
    threshold = float(np.float32(cal.threshold))  # the value the graph compares against
    proto, exporter = to_onnx(inference_wrapper(det, threshold), det.input_shape_)
    names, shape = det.input_feature_names(), list(det.input_shape_)
    props = {
        "ede_version": __version__,
        "feature_names": json.dumps(names),
        "input_shape": json.dumps(shape),
        "threshold": repr(threshold),
        "target_fpr": repr(cal.target_fpr),
    }
    files = {MODEL_FILE: _with_props(proto.SerializeToString(), props)}
    scores, flags = _run(files[MODEL_FILE], X_val)
    rel = float(np.max(np.abs(scores - torch_scores) / np.maximum(np.abs(torch_scores), 1e-6)))
    if not rel <= PARITY_TOLERANCE:
        raise ValueError(
            f"parity check failed: onnxruntime vs torch scores differ by up to {rel:.3g} "
            f"(relative; limit {PARITY_TOLERANCE:g}) on {len(X_val)} validation rows; "
            "nothing written"
        )
    metrics = {"validation": operating_metrics(scores, y_val, threshold)}
    meta = {
        "format": FORMAT,
        "ede_version": __version__,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", *shape],
            "layout": "table" if len(shape) == 1 else "image",
            "column": None if len(shape) == 1 else IMAGE_COLUMN,
        },
        "feature_names": names,
        "input_shape": shape,
        "outputs": {
            "score": "float32 (batch,), higher = more anomalous",
            "is_anomaly": "bool (batch,), score > threshold",
        },
        "threshold": threshold,
        "calibration": {**cal.to_dict(), "threshold": threshold},
        "training": {"params": det.get_params()},
        "metrics": metrics,
        "parity": {"max_rel_diff": rel, "tolerance": PARITY_TOLERANCE, "n_rows": len(X_val)},
        "data": {"validation_rows_sha256": rows_sha256(X_val, y_val), **_data(provenance)},
        "exporter": {"name": exporter, "torch": torch.__version__, **_versions()},
        "files": {MODEL_FILE: _file_entry(files[MODEL_FILE])},
    }
    if quantize == "int8":
        files[INT8_FILE] = _with_props(quantize_int8(files[MODEL_FILE]), props)
        q_scores, _ = _run(files[INT8_FILE], X_val)
        metrics["validation_int8"] = q_metrics = operating_metrics(q_scores, y_val, threshold)
        meta["files"][INT8_FILE] = {
            **_file_entry(files[INT8_FILE]),
            "size_ratio": len(files[INT8_FILE]) / len(files[MODEL_FILE]),
            "auroc_change_points": _points(metrics["validation"], q_metrics),
            "max_abs_score_diff": float(np.max(np.abs(q_scores - scores))),
        }
    if not np.array_equal(flags, scores > np.float32(threshold)):
        raise ValueError("exported graph's is_anomaly disagrees with score > threshold")
    _write(out, files, meta)
    return meta


def _data(provenance: dict | None) -> dict:
    return dict((provenance or {}).get("data", {}))


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _file_entry(data: bytes) -> dict:
    return {"sha256": sha256(data), "bytes": len(data)}


def _points(before: dict, after: dict) -> float | None:
    if before["auroc"] is None or after["auroc"] is None:
        return None
    return 100.0 * (after["auroc"] - before["auroc"])


def _write(out: str, files: dict[str, bytes], meta: dict) -> None:
    """Old metadata goes first, new metadata last: a reader never pairs old and new files."""
    base = out.rstrip("/")
    fs, _ = fsspec.core.url_to_fs(base)
    fs.invalidate_cache()
    for name in (METADATA_FILE, INT8_FILE):
        _, path = fsspec.core.url_to_fs(f"{base}/{name}")
        if fs.exists(path):
            fs.rm(path)
    for name, data in files.items():
        write_bytes_atomic(f"{base}/{name}", data)
    write_bytes_atomic(f"{base}/{METADATA_FILE}", json.dumps(meta, indent=2).encode())


def export_folder(
    model: str,
    out: str,
    *,
    target_fpr: float | None = None,
    quantize: str | None = None,
    validation: str | None = None,
) -> dict:
    """`ede export`: a model folder from `ede train` (or `ESAD.save` plus validation rows)."""
    if quantize not in (None, *QUANTIZE_CHOICES):  # before the slow loads
        raise ValueError(f"quantize={quantize!r}: expected one of {QUANTIZE_CHOICES}")
    det = ESAD.load(model)
    prov = read_provenance(model) or {}
    url = validation or f"{model.rstrip('/')}/{VALIDATION_FILE}"
    try:
        X_val, y_val = read_validation(
            url, det.input_feature_names(), det.input_shape_, prov.get("label_column", "label")
        )
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{shown_url(url)}: no validation rows; `ede train` writes them, or pass --validation"
        ) from None
    if target_fpr is None:
        target_fpr = prov.get("calibration", {}).get("target_fpr", DEFAULT_TARGET_FPR)
    return export(det, out, X_val, y_val, target_fpr=target_fpr, quantize=quantize, provenance=prov)


def summary_lines(meta: dict, out: str) -> list[str]:
    """What `ede export` prints: the file, its checks, and the int8 trade-off if any."""
    model, val = meta["files"][MODEL_FILE], meta["metrics"]["validation"]
    cal, parity = meta["calibration"], meta["parity"]
    lines = [
        f"{out.rstrip('/')}/{MODEL_FILE}: {model['bytes'] / 1e3:.1f} kB, exporter "
        f"{meta['exporter']['name']}, parity max rel diff {parity['max_rel_diff']:.2g} on "
        f"{parity['n_rows']} validation rows",
        f"threshold {meta['threshold']:.6g} at target FPR {cal['target_fpr']:g} "
        f"({cal['n_normals']} validation normals); validation FPR {_fmt(val['fpr'])}, "
        f"TPR {_fmt(val['tpr'])}, AUROC {_fmt(val['auroc'])}",
    ]
    if INT8_FILE in meta["files"]:
        q = meta["files"][INT8_FILE]
        change = q["auroc_change_points"]
        lines.append(
            f"{INT8_FILE}: {q['bytes'] / 1e3:.1f} kB = {100 * q['size_ratio']:.1f}% of fp32; "
            f"validation AUROC {_fmt(meta['metrics']['validation_int8']['auroc'])} "
            f"({'n/a' if change is None else f'{change:+.2f}'} points)"
        )
    return lines


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
