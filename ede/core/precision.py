"""Which arithmetic a training step runs in: fp32, or bf16 autocast with fp32 masters.

bf16 pays only where the hardware multiplies it much faster than fp32: AMX tiles
(`amx_bf16`) on CPUs, and CUDA GPUs. AVX512-BF16 alone does not: on a Xeon that has it
and no AMX (oneDNN's avx512_core_bf16 kernels) a bf16 GEMM ran at 75 GFLOP/s against
154 for fp32, and `ede bench train` measured bf16 epochs 1.87x (shuttle) and 1.56x
(the image defaults) as long as fp32's. On AVX2 CPUs PyTorch emulates it, hundreds of
times slower. So "auto" picks bf16 on AMX and CUDA only. Autocast keeps the weights,
the optimizer state and the gradients' accumulation in fp32 and runs only the layers
in bf16; the loss terms are computed from fp32 casts of the outputs
(`ede.core.training`), so the sums of small squared differences keep fp32's precision.
"""

from __future__ import annotations

import contextlib
import functools

import torch

PRECISIONS = ("fp32", "bf16", "auto")
BF16_CPU_FLAGS = ("amx_bf16",)  # AVX512-BF16 alone is slower than fp32 (above)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and any(f in cpu_flags() for f in BF16_CPU_FLAGS)


def resolve(precision: str, device: torch.device) -> str:
    """ "fp32" or "bf16": what `precision` means on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: must be one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(resolved: str, device: torch.device):
    """The forward pass's context: bf16 autocast, or nothing for fp32."""
    if resolved == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
