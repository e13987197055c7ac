"""From a fitted ESAD to ONNX bytes, and back through onnxruntime.

The graph is an inference wrapper, not the training net (docs/design.md, style 8): affine
scaling, the three networks, the score with its scales, and the threshold, all as
registered buffers, so scoring needs no torch. Kept apart from `ede.export.exporter`,
which decides what is checked and written: this module only knows how a graph is
made (torch.onnx's dynamo exporter, one file, `external_data=False`; if it fails,
the TorchScript exporter, and the caller records which ran), labelled and quantised
(dynamically, or statically on calibration rows).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from ede.core.estimator import ESAD
from ede.core.model import InferenceWrapper
from ede.export.artifact import INPUT_NAME, OUTPUT_NAMES, infer, session


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


def with_props(model: bytes, props: dict[str, str]) -> bytes:
    """Metadata props travel inside the graph: an edge box may get the .onnx alone."""
    import onnx

    proto = onnx.load_from_string(model)
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = "ESAD anomaly detector: raw rows in; score (higher = more anomalous), "
    proto.doc_string += "is_anomaly = score > threshold out. See metadata_props."
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def quantize_int8(model: bytes) -> bytes:
    """onnxruntime's dynamic quantisation (int8 weights, activations quantised per batch
    at run time), after its pre-processing, which it needs for shape inference."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quantizing(model) as (pre, dst):
        quantize_dynamic(pre, dst, weight_type=QuantType.QInt8)
        with open(dst, "rb") as f:
            return f.read()


CALIBRATION_ROWS = 512  # rows per calibration batch fed to onnxruntime
# Static quantisation touches the layers only: the score's tail (difference, square,
# mean) stays in fp32, where an int8 step would be as large as the differences it sums.
STATIC_OPS = ("Gemm", "MatMul", "LeakyRelu")


def quantize_int8_static(model: bytes, X_cal: np.ndarray) -> bytes:
    """Static QDQ quantisation: int8 weights per output channel, activation ranges fixed
    by a min-max pass over `X_cal` (the validation rows the export already holds), so
    the graph runs QGemm/QLinearLeakyRelu chains with no per-batch range search.

    Activations are u8 and weights s8 (U8S8): on CPUs without VNNI (AVX2 only) MLAS
    fuses every layer of this graph into QGemm, while S8S8 left three layers as
    dequantise-Gemm-quantise and ran slower (README, scoring benchmark)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    X_cal = np.ascontiguousarray(X_cal, dtype=np.float32)
    with _quantizing(model) as (pre, dst):
        quantize_static(
            pre,
            dst,
            _Rows(X_cal),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(STATIC_OPS),
            calibrate_method=CalibrationMethod.MinMax,
        )
        with open(dst, "rb") as f:
            return f.read()


class _Rows:
    """onnxruntime's CalibrationDataReader protocol over an array, in slices."""

    def __init__(self, X: np.ndarray):
        self._batches = iter(
            [{INPUT_NAME: X[i : i + CALIBRATION_ROWS]} for i in range(0, len(X), CALIBRATION_ROWS)]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


@contextlib.contextmanager
def _quantizing(model: bytes) -> Iterator[tuple[str, str]]:
    """(pre-processed input path, output path) in a temporary folder: onnxruntime's
    quantisers work on files, after `quant_pre_process` (shape inference, fusions)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src, pre, dst = (os.path.join(tmp, n) for n in ("a.onnx", "b.onnx", "c.onnx"))
        with open(src, "wb") as f:
            f.write(model)
        quant_pre_process(src, pre)
        yield pre, dst


def run_graph(model: bytes, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score, is_anomaly) from onnxruntime: what a scorer will see, for the parity check;
    in the scorer's slices, so a large validation split never holds all its activations."""
    return infer(session(model), X)


def runtime_versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
