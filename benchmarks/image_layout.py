"""Channels-last against the default layout for the image defaults, end to end.

`ede bench train`'s fp32 image run (the conv net over its whole budget on the 28x28
task of digit 0, validation every epoch) twice per layout, alternating, with
`ede.core.training.memory_layout` forced to the default layout for the "default"
runs. Prints the median epoch time, the run's wall time and the final validation
AUROC of each run.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/image_layout.py
"""

from __future__ import annotations

import torch

import ede.core.training as training
from ede.bench import train as bench

ROUNDS = 2


def main() -> None:
    torch.set_num_threads(1)
    default = lambda x: torch.contiguous_format  # noqa: E731
    layouts = {"default": default, "channels_last": training.memory_layout}
    for _ in range(ROUNDS):
        for name, layout in layouts.items():
            training.memory_layout = layout  # this script's process only
            report = bench.image_precision(precisions=("fp32",), log=lambda line: None)
            run = report["runs"][bench.RUN_KEYS["fp32"]]
            print(f"{name}: epoch {run['epoch_s_median']:.3f} s, run {run['wall_s']:.1f} s, "
                  f"final val AUROC {run['final_val_auroc']:.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
