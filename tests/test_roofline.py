"""The limits benchmarks judge engines against: measured, positive, merged best-first."""

import torch

from ede.bench import roofline
from ede.core.precision import cpu_flags, native_bf16, resolve


def test_peaks_are_positive_and_shaped(monkeypatch):
    monkeypatch.setattr(roofline, "BUDGET_S", 0.02)  # correctness here, not speed
    monkeypatch.setattr(roofline, "MAX_SIDE", 256)
    monkeypatch.setattr(roofline, "MLP_SHAPE", (256, 128, 128))
    threads = torch.get_num_threads()
    p = roofline.peaks(threads=1)
    names = {"fp32_gemm", "fp32_gemm_mlp_shape", "bf16_gemm_autocast"}
    names |= {"int8_gemm_onnxruntime", "int8_gemm_torch"}
    assert set(p["kernels"]) == names
    for v in p["kernels"].values():
        assert v["gflops"] > 0 and len(v["shape"]) == 3
    assert p["kernels"]["fp32_gemm_mlp_shape"]["shape"] == [256, 128, 128]
    assert roofline.fp32_peak(p) == max(
        p["kernels"]["fp32_gemm"]["gflops"], p["kernels"]["fp32_gemm_mlp_shape"]["gflops"]
    )
    share = roofline.shares(2.0, p)["vs_fp32_gemm"]
    assert abs(share - 2.0 / p["kernels"]["fp32_gemm"]["gflops"]) < 1e-12
    assert set(p["cpu_features"]) <= cpu_flags()
    assert torch.get_num_threads() == threads  # the caller's setting, restored


def test_best_of_keeps_the_faster_measurement_per_kernel():
    a = {"kernels": {"x": {"shape": [1, 1, 1], "gflops": 5.0}, "y": {"shape": [2], "gflops": 1.0}}}
    b = {"kernels": {"x": {"shape": [3, 3, 3], "gflops": 4.0}, "y": {"shape": [4], "gflops": 2.0}}}
    got = roofline.best_of(a, b)["kernels"]
    assert got["x"] == a["kernels"]["x"] and got["y"] == b["kernels"]["y"]


def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve("fp32", cpu) == "fp32" and resolve("bf16", cpu) == "bf16"
    assert resolve("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert native_bf16(cpu) == ("amx_bf16" in cpu_flags())  # AVX512-BF16 alone: slower
