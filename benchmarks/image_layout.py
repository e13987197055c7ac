"""Channels-last against the default layout for the image defaults, end to end.

`ede bench train`'s fp32 image run (the conv net over its whole budget on the 28x28
task of digit 0, validation every epoch) twice per layout, alternating, with
`ede.core.training.memory_layout` forced to the default layout for the "default"
runs. Prints the median epoch time, the run's wall time and the final validation
AUROC of each run.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/image_layout.py
"""

from __future__ import annotations

import time

import torch

import ede.core.training as training
from ede.bench import train as bench

ROUNDS = 2


def fp32_only(config, warmup, rounds, log):
    runtime = bench._StampedRuntime()
    start = time.perf_counter()
    training.train_loop({**config, "train": {**config["train"], "precision": "fp32"}}, runtime)
    got = bench._summary(runtime.history, warmup, time.perf_counter() - start)
    return {"a_in_process": got, "a_in_process_bf16": got}


def main() -> None:
    torch.set_num_threads(1)
    default = lambda x: torch.contiguous_format  # noqa: E731
    layouts = {"default": default, "channels_last": training.memory_layout}
    bench._precisions = fp32_only  # this script's process only
    for _ in range(ROUNDS):
        for name, layout in layouts.items():
            training.memory_layout = layout
            run = bench.image_precision(log=lambda line: None)["runs"]["a_in_process"]
            print(f"{name}: epoch {run['epoch_s_median']:.3f} s, run {run['wall_s']:.1f} s, "
                  f"final val AUROC {run['final_val_auroc']:.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
