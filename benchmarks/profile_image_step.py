"""Where a conv training step's time goes, and what one step costs per configuration.

One training step of `ede.core.training.train_loop` (forward, ESAD's loss, backward,
fused Adam) on a batch of 28x28 images, under torch's profiler: seconds a step (median
after warm-up) and the self-CPU share of the top operators. Fit seconds of a budget are
about steps x seconds a step, so this says which knob (steps, batch, widths) buys what.

    OMP_NUM_THREADS=1 taskset -c 1 python -m benchmarks.profile_image_step --json p.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ede.core.model import EncoderDecoderEncoder
from ede.core.nets import NetConfig
from ede.core.objective import esad_objective

WEIGHTS = dict(lambda_entropy=0.1, lambda_consistency=0.1, eta=1.0, anomaly_target="invert")
# (conv widths, batch, memory layout); train_loop trains images channels-last
CONFIGS = {
    "c16-32_b256": ((16, 32), 256, torch.contiguous_format),
    "c8-16_b256": ((8, 16), 256, torch.contiguous_format),
    "c8-16_b256_channels_last": ((8, 16), 256, torch.channels_last),
}


def step_profile(channels, batch: int, layout, steps: int = 12, warmup: int = 3) -> dict:
    torch.manual_seed(0)
    cfg = NetConfig((1, 28, 28), hidden=(128, 64), latent_dim=16, conv_channels=channels)
    net = EncoderDecoderEncoder(cfg).to(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-6, fused=True)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=layout)
    y = (torch.rand(batch) < 0.05).long()
    gen = torch.Generator().manual_seed(0)

    def one():
        terms = esad_objective(x, *net(x), y, generator=gen, **WEIGHTS)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()

    for _ in range(warmup):
        one()
    times, cpu = [], []
    for _ in range(steps):  # timed without the profiler, whose hooks cost time
        t0, c0 = time.perf_counter(), time.process_time()
        one()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(4):
            one()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    return {
        "seconds_per_step": float(np.median(times)),
        "cpu_seconds_per_step": float(np.median(cpu)),
        "top_ops": {e.key: e.self_cpu_time_total / total for e in top},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = {name: step_profile(*config) for name, config in CONFIGS.items()}
    for name, got in out.items():
        ops = ", ".join(f"{k} {100 * v:.0f}%" for k, v in got["top_ops"].items())
        wall, cpu = got["seconds_per_step"], got["cpu_seconds_per_step"]
        print(f"{name}: {wall:.3f} s a step (cpu {cpu:.3f} s); {ops}")
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
