#!/usr/bin/env bash
# GPU check (issue 3): a short multi-GPU Ray Train run and a 4-trial Ray Tune search with
# use_gpu, on a generated table; prints throughput per GPU. Meant to finish in < 5 min on a
# machine with 1+ CUDA GPUs (RAY_ADDRESS unset: Ray starts locally and sees them).
# Usage: benchmarks/gpu_check.sh [rows] [epochs]    (from the repo root, after `make install`)
set -euo pipefail
PY=${PY:-.venv/bin/python}
ROWS=${1:-400000}
EPOCHS=${2:-4}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} RAY_AUTH_MODE=disabled

"$PY" - "$WORK" "$ROWS" "$EPOCHS" <<'PYEOF'
import sys, time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ede.distributed import trainer as dt
from ede.distributed import tuning
from ede.core.estimator import ESAD

work, rows, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n_gpu = torch.cuda.device_count()
if n_gpu == 0:
    sys.exit("gpu_check: no CUDA GPU visible")
print(f"GPUs: {n_gpu} x {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
rng = np.random.default_rng(0)
d, n_anom = 32, rows // 50
X = np.vstack([rng.normal(size=(rows - n_anom, d)), rng.normal(1.0, 1.0, (n_anom, d))])
y = np.r_[np.zeros(rows - n_anom, np.int64), np.ones(n_anom, np.int64)]
order = rng.permutation(rows)
url = f"{work}/table.parquet"
cols = {f"f{j}": X[order, j].astype(np.float32) for j in range(d)}
pq.write_table(pa.table({**cols, "label": y[order]}), url, row_group_size=50_000)

t0 = time.perf_counter()
startup = dt.connect()
print(f"ray start-up {startup:.1f} s; cluster {dt.ray.cluster_resources()}")
data = dt.prepare_data(url, validation_fraction=0.2, seed=0)
params = dict(seed=0, epochs=epochs, min_steps=None, max_steps=None, batch_size=4096 * n_gpu)
for workers in sorted({1, n_gpu}):
    scaling = dt.Scaling(workers=workers, use_gpu=True, cpus_per_worker=1.0)
    run = dt.RunSpec(f"{work}/ray", name=f"gpu-{workers}", keep_checkpoints=1)
    start = time.perf_counter()
    det, _ = dt.fit_distributed(ESAD(**params), data, scaling, run)
    wall = time.perf_counter() - start
    stamps = [m["timestamp"] for m in det.history_]
    epoch_s = float(np.median(np.diff(stamps[1:]))) if len(stamps) > 2 else float("nan")
    per_gpu = data.fit_rows / epoch_s / workers
    print(
        f"train {workers} GPU(s): epoch {epoch_s:.3f} s, {data.fit_rows / epoch_s:,.0f} rows/s, "
        f"{per_gpu:,.0f} rows/s per GPU; run wall {wall:.1f} s; "
        f"val AUROC {det.history_[-1]['val_auroc']:.4f}"
    )

spec = tuning.SearchSpec(trials=4, epochs=epochs, max_concurrent=n_gpu, refit=False)
start = time.perf_counter()
out = tuning.search(
    ESAD(seed=0, batch_size=4096),
    url,
    f"{work}/ray",
    spec,
    dt.Scaling(workers=1, use_gpu=True, cpus_per_worker=1.0),
    experiment="gpu-tune",
)
print(out.table[["trial_id", "status", "epochs_done", "final_val_auroc", "wall_s"]])
print(
    f"tune: 4 trials on {n_gpu} GPU(s) in {time.perf_counter() - start:.1f} s; "
    f"best val AUROC {out.best_val_auroc:.4f}; total {time.perf_counter() - t0:.1f} s"
)
PYEOF
