"""ONNX export of a fitted ESAD: one self-contained graph, checked before it is written.

The graph (`ede.export.onnx_graph`) takes raw rows (`x`, float32, (batch,
*input_shape)) and gives `score` (float32, (batch,), higher = more anomalous) and
`is_anomaly` (bool, score > threshold); metadata says which exporter made it.

Nothing is written until every check passed: `onnx.checker`, then parity,
onnxruntime's scores against `ESAD.decision_function` on the validation rows (at most
PARITY_ROWS of them, a seeded sample: parity is a property of the graph, not of the
data, and torch's pass over a 4M-row flow's 600k validation rows took 0.9 s of one
core), max relative difference <= 1e-4; metrics and the drift reference use
onnxruntime's scores of every validation row. The threshold baked in is the one the
model folder calibrated (`ede.export.model_folder`); only an explicit request, or a
bare ESAD with no folder behind it, calibrates one here (`ede.export.calibration`). `quantize`
adds quantised graphs: "int8" (dynamic) and/or "int8-static" (QDQ, its activation
ranges calibrated on the same validation rows), each reported as size ratio and
validation AUROC change. metadata.json goes last.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ede import __version__
from ede.core.checks import check_shape, check_X, check_y
from ede.core.estimator import ESAD
from ede.data.fingerprint import rows_sha256
from ede.export.artifact import (
    FORMAT,
    IMAGE_COLUMN,
    INPUT_NAME,
    METADATA_FILE,
    MODEL_FILE,
    QUANTIZED,
    sha256,
)
from ede.export.calibration import (
    DEFAULT_TARGET_FPR,
    Calibration,
    calibrate_threshold,
    operating_metrics,
)
from ede.export.model_folder import read_model_folder
from ede.export.onnx_graph import (
    inference_wrapper,
    quantize_int8,
    quantize_int8_static,
    run_graph,
    runtime_versions,
    to_onnx,
    with_props,
)
from ede.scoring.drift import reference_edges
from ede.storage import check_bucket, remove, shown_url, write_bytes_atomic, write_json

PARITY_TOLERANCE = 1e-4
PARITY_ROWS = 100_000  # validation rows torch scores for parity when the threshold is given
QUANTIZE_CHOICES = tuple(QUANTIZED)


def _check_quantize(quantize: str | Sequence[str] | None) -> tuple[str, ...]:
    """The quantised variants asked for, in QUANTIZE_CHOICES order, each once."""
    asked = (quantize,) if isinstance(quantize, str) else tuple(quantize or ())
    for q in asked:
        if q not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize={q!r}: expected one of {QUANTIZE_CHOICES}")
    return tuple(q for q in QUANTIZE_CHOICES if q in asked)


def export(
    det: ESAD,
    out: str,
    X_val,
    y_val,
    *,
    target_fpr: float = DEFAULT_TARGET_FPR,
    quantize: str | Sequence[str] | None = None,
    provenance: dict | None = None,
    calibration: Calibration | None = None,
) -> dict:
    """Export `det` to the folder `out`; returns the metadata written beside the graph.

    `y_val`: 1 = labelled anomaly, 0 = normal or unlabelled (the threshold's normals).
    `calibration`: a threshold chosen already (a model folder's), baked in as it is;
    without one, the threshold is calibrated here on the validation rows at `target_fpr`.
    """
    check_is_fitted(det, "net_")
    variants = _check_quantize(quantize)
    X_val = check_X(X_val, "validation X")
    check_shape(X_val, det.input_shape_, "validation X")
    y_val = check_y(y_val, len(X_val), "validation y")
    # torch scores every row only when it calibrates the threshold here
    checked = slice(None) if calibration is None else parity_rows(len(X_val))
    torch_scores = det.decision_function(X_val[checked]).astype(np.float32)
    cal = calibration or calibrate_threshold(torch_scores, y_val, target_fpr)
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
    files = {MODEL_FILE: with_props(proto.SerializeToString(), props)}
    scores, flags = run_graph(files[MODEL_FILE], X_val)
    diff = np.abs(scores[checked] - torch_scores)
    rel = float(np.max(diff / np.maximum(np.abs(torch_scores), 1e-6)))
    if not rel <= PARITY_TOLERANCE:
        raise ValueError(
            f"parity check failed: onnxruntime vs torch scores differ by up to {rel:.3g} "
            f"(relative; limit {PARITY_TOLERANCE:g}) on {len(torch_scores)} validation rows; "
            "nothing written"
        )
    metrics = {"validation": operating_metrics(scores, y_val, threshold)}
    normal = scores[np.asarray(y_val) == 0]
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
        # a refit fitted its validation rows: the metrics above are then in-sample
        "validation_rows_fitted": bool((provenance or {}).get("validation_rows_fitted")),
        "parity": {
            "max_rel_diff": rel,
            "tolerance": PARITY_TOLERANCE,
            "n_rows": len(torch_scores),
        },
        # what a scoring batch's scores are compared with (ede.scoring.drift)
        "reference": {"score_edges": reference_edges(normal), "rows": len(normal)},
        "data": {"validation_rows_sha256": rows_sha256(X_val, y_val), **_data(provenance)},
        "exporter": {"name": exporter, "torch": str(torch.__version__), **runtime_versions()},
        "files": {MODEL_FILE: _file_entry(files[MODEL_FILE])},
    }
    for variant in variants:
        name = QUANTIZED[variant]
        if variant == "int8":
            graph = quantize_int8(files[MODEL_FILE])
        else:
            graph = quantize_int8_static(files[MODEL_FILE], X_val)
        files[name] = with_props(graph, props)
        q_scores, _ = run_graph(files[name], X_val)
        metrics[_metrics_key(variant)] = q_metrics = operating_metrics(q_scores, y_val, threshold)
        meta["files"][name] = {
            **_file_entry(files[name]),
            "variant": variant,
            "size_ratio": len(files[name]) / len(files[MODEL_FILE]),
            "auroc_change_points": _points(metrics["validation"], q_metrics),
            "max_abs_score_diff": float(np.max(np.abs(q_scores - scores))),
        }
    if not np.array_equal(flags, scores > np.float32(threshold)):
        raise ValueError("exported graph's is_anomaly disagrees with score > threshold")
    _write(out, files, meta)
    return meta


def parity_rows(n: int) -> np.ndarray | slice:
    """The validation rows parity compares: all of them up to PARITY_ROWS, else that many
    drawn without replacement (seed 0, in row order), the same rows on every export."""
    if n <= PARITY_ROWS:
        return slice(None)
    return np.sort(np.random.default_rng(0).choice(n, PARITY_ROWS, replace=False))


def _metrics_key(variant: str) -> str:
    """metadata.json's metrics key for a quantised variant (int8's predates the others)."""
    return "validation_" + variant.replace("-", "_")


def _data(provenance: dict | None) -> dict:
    return dict((provenance or {}).get("data", {}))


def _file_entry(data: bytes) -> dict:
    return {"sha256": sha256(data), "bytes": len(data)}


def _points(before: dict, after: dict) -> float | None:
    if before["auroc"] is None or after["auroc"] is None:
        return None
    return 100.0 * (after["auroc"] - before["auroc"])


def _write(out: str, files: dict[str, bytes], meta: dict) -> None:
    """Old metadata goes first, new metadata last: a reader never pairs old and new files."""
    base = out.rstrip("/")
    for name in (METADATA_FILE, *QUANTIZED.values()):
        remove(f"{base}/{name}")
    for name, data in files.items():
        write_bytes_atomic(f"{base}/{name}", data)
    write_json(f"{base}/{METADATA_FILE}", meta)


def export_folder(
    model: str,
    out: str,
    *,
    target_fpr: float | None = None,
    quantize: str | Sequence[str] | None = None,
    validation: str | None = None,
) -> dict:
    """`ede export`: a model folder from `ede train` (or `ESAD.save` plus validation rows).

    The folder's threshold goes into the graph as it is. `target_fpr` or `validation` asks
    for a new one on those rows (at the folder's rate unless `target_fpr` says otherwise),
    and so does a folder that recorded no calibration.
    """
    _check_quantize(quantize)  # before the slow loads
    check_bucket(out)  # and an output with nowhere to go
    folder = read_model_folder(model)
    if folder.validation_rows_fitted and target_fpr is not None and validation is None:
        raise ValueError(
            f"{shown_url(model)}: this model was refitted on its validation rows, so they "
            "cannot calibrate a new threshold; pass --validation with held-out rows"
        )
    X_val, y_val = folder.validation_rows(validation)
    kept = folder.calibration if target_fpr is None and validation is None else None
    return export(
        folder.det,
        out,
        X_val,
        y_val,
        target_fpr=folder.target_fpr if target_fpr is None else target_fpr,
        quantize=quantize,
        provenance=folder.provenance,
        calibration=kept,
    )


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
        f"TPR {_fmt(val['tpr'])}, AUROC {_fmt(val['auroc'])}"
        + (
            " (in-sample: the refit fitted these rows)"
            if meta.get("validation_rows_fitted")
            else ""
        ),
    ]
    for variant, name in QUANTIZED.items():
        if name not in meta["files"]:
            continue
        q = meta["files"][name]
        change = q["auroc_change_points"]
        lines.append(
            f"{name}: {q['bytes'] / 1e3:.1f} kB = {100 * q['size_ratio']:.1f}% of fp32; "
            f"validation AUROC {_fmt(meta['metrics'][_metrics_key(variant)]['auroc'])} "
            f"({'n/a' if change is None else f'{change:+.2f}'} points)"
        )
    return lines


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
