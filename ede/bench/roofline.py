"""The machine's real limits, measured in the run that compares against them.

A benchmark's "share of the limit" means nothing if the limit is a guess or was measured
on another day: the shared machine's load moves every figure. So `ede bench score` and
`ede bench train` call `peaks()` in their own run, on the same core and thread count as
the engines they judge, and report every engine's GFLOP/s as a share of:

- fp32: torch's GEMM (one large square, and the default MLP's widest layer shape,
  4096x128 @ 128x128, which is what scoring a 4096-row batch actually multiplies);
- bf16: the same square under `torch.autocast("cpu", torch.bfloat16)` (AMX where the
  CPU has it; elsewhere a slow fallback, which is itself the finding);
- int8: onnxruntime's `MatMulInteger` (u8 x s8 -> s32, MLAS: VNNI/AMX where present,
  AVX2 elsewhere), the kernel family a quantised graph runs; and `torch._int_mm`.

Each kernel but fp32's (a fixed 2048 square) is timed on a size that grows until one
call takes `MIN_CALL_S` (capped), then repeated for `BUDGET_S`; the best repetition
counts, as in the engine rounds. So a kernel that is 300x slower on this CPU costs a
fraction of a second, not minutes. On one thread the clock is that thread's CPU time
(`clock`), as for the engines, so a share compares work with work on a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ede.core.precision import cpu_flags

BUDGET_S = 0.4  # per kernel, after sizing
MIN_CALL_S = 0.1  # grow the square until one call takes this long (fp32: about 2048)
MAX_SIDE = 4096
FP32_SIDE = 2048  # fixed: one disturbed sizing call must not shrink the fp32 limit
MLP_SHAPE = (4096, 128, 128)  # (rows, in, out): the default MLP's 128-wide layer


def clock(threads: int) -> Callable[[], float]:
    """One thread: its CPU time, which excludes the waits for a core that other processes
    hold on a shared machine (all the work runs on the calling thread: torch and
    onnxruntime start no pool for one thread). More threads: wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


def _best_seconds(fn: Callable[[], object], budget: float | None = None) -> float:
    budget = BUDGET_S if budget is None else budget
    now = clock(torch.get_num_threads())
    fn()  # warm-up: first-call allocation and packing
    best, spent = float("inf"), 0.0
    while spent < budget:
        start = now()
        fn()
        took = max(now() - start, 1e-9)
        best, spent = min(best, took), spent + took
    return best


def _sized(make: Callable[[int], Callable[[], object]]) -> tuple[int, float]:
    """(side, best seconds) for the smallest square side >= 256 whose call takes
    MIN_CALL_S, or MAX_SIDE."""
    side = 256
    while True:
        fn = make(side)
        now = clock(torch.get_num_threads())
        start = now()
        fn()
        if now() - start >= MIN_CALL_S or side >= MAX_SIDE:
            return side, _best_seconds(fn)
        side *= 2


def _entry(m: int, k: int, n: int, seconds: float) -> dict:
    return {"shape": [m, k, n], "gflops": 2 * m * k * n / seconds / 1e9}


def fp32_gemm(side: int | None = None) -> dict:
    """torch fp32 matmul on a square (`side`, default FP32_SIDE)."""

    def make(s: int):
        a, b = torch.randn(s, s), torch.randn(s, s)
        return lambda: torch.mm(a, b)

    side = min(side or FP32_SIDE, MAX_SIDE)
    return _entry(side, side, side, _best_seconds(make(side)))


def fp32_gemm_shape(m: int, k: int, n: int) -> dict:
    a, b = torch.randn(m, k), torch.randn(k, n)
    return _entry(m, k, n, _best_seconds(lambda: torch.mm(a, b)))


def bf16_gemm() -> dict:
    """fp32 tensors under bf16 autocast: what `precision="bf16"` training runs."""

    def make(s: int):
        a, b = torch.randn(s, s), torch.randn(s, s)

        def fn():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torch.mm(a, b)

        return fn

    s, sec = _sized(make)
    return _entry(s, s, s, sec)


def int8_gemm_torch() -> dict:
    def make(s: int):
        a = torch.randint(-128, 127, (s, s), dtype=torch.int8)
        b = torch.randint(-128, 127, (s, s), dtype=torch.int8)
        return lambda: torch._int_mm(a, b)

    s, sec = _sized(make)
    return _entry(s, s, s, sec)


def int8_gemm_onnxruntime(threads: int = 1) -> dict:
    """onnxruntime's MatMulInteger, u8 activations x s8 constant weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ede.export.artifact import session

    rng = np.random.default_rng(0)

    def make(s: int):
        weights = numpy_helper.from_array(rng.integers(-128, 127, (s, s)).astype(np.int8), "b")
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
            "int8_gemm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [s, s])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [s, s])],
            [weights],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        sess = session(model.SerializeToString(), threads)
        a = rng.integers(0, 255, (s, s)).astype(np.uint8)
        return lambda: sess.run(None, {"a": a})

    s, sec = _sized(make)
    return _entry(s, s, s, sec)


def cpu_features() -> list[str]:
    """The CPU flags that decide which kernels run (empty where /proc/cpuinfo is absent)."""
    wanted = {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16"}
    wanted |= {"amx_bf16", "amx_int8", "amx_tile"}
    return sorted(wanted & cpu_flags())


def peaks(threads: int = 1) -> dict:
    """Every limit above, measured now on `threads` threads; GFLOP/s and shapes."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {
            "fp32_gemm": fp32_gemm(),
            "fp32_gemm_mlp_shape": fp32_gemm_shape(*MLP_SHAPE),
            "bf16_gemm_autocast": bf16_gemm(),
            "int8_gemm_onnxruntime": int8_gemm_onnxruntime(threads),
            "int8_gemm_torch": int8_gemm_torch(),
        }
    finally:
        torch.set_num_threads(saved)
    return {
        "kernels": out,
        "threads": threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_features": cpu_features(),
    }


def fp32_peak(p: dict) -> float:
    """The fp32 limit an engine is judged against: the better of the two fp32 shapes."""
    k = p["kernels"]
    return max(k["fp32_gemm"]["gflops"], k["fp32_gemm_mlp_shape"]["gflops"])


def shares(gflops: float, p: dict) -> dict:
    """`gflops` as a share of each measured kernel."""
    return {f"vs_{name}": gflops / v["gflops"] for name, v in p["kernels"].items()}


def limits_table(p: dict) -> list[str]:
    """The markdown table of `peaks()`' kernels, as every benchmark report prints it."""
    rows = [
        f"| {name} | {'x'.join(map(str, v['shape']))} | {v['gflops']:.1f} |"
        for name, v in p["kernels"].items()
    ]
    return ["| limit (this run, same core) | shape | GFLOP/s |", "|---|---|---|", *rows]


def best_of(a: dict, b: dict) -> dict:
    """Two `peaks()` of one run merged kernel by kernel, the faster kept: a load burst
    during one measurement must not lower the limit engines are judged against."""
    kernels = {
        name: max(a["kernels"][name], b["kernels"][name], key=lambda v: v["gflops"])
        for name in a["kernels"]
    }
    return {**a, "kernels": kernels}
