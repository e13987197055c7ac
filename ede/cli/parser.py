"""The grammar of `ede`: every command and option, and nothing that runs.

Options that several commands take come from `ede.cli.options`. Option names are the
library's parameter names (`ede bench` passes them on as is), and each command's
description is the docstring of the function that declares it.
"""

from __future__ import annotations

import argparse

from ede.cli.options import (
    TORCH_THREADS,
    comma_list,
    command,
    data_dir,
    id_columns,
    label_column,
    ray_options,
    report,
    seed_and_threads,
    threads,
    urls,
    validation_fraction,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ede",
        description="ESAD semi-supervised anomaly detection: train, benchmark, score.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_train, _tune, _train_run, _export, _score, _report, _bench):
        add(sub)
    return parser


def _train(sub) -> None:
    """Fit ESAD in this process on a table (.parquet, .csv or .npz at any fsspec URL:
    s3://, file://, a local path) and save it (weights + JSON) under --out. The features
    are every numeric column but the label and --id-columns, printed by name.
    """
    p = command(sub, _train, help="fit ESAD on a table and save the model")
    urls(p, data="table URL; label column optional", out="model folder URL (written atomically)")
    label_column(p)
    id_columns(p)
    p.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    seed_and_threads(p)
    validation_fraction(
        p,
        "share of rows held out (stratified) to calibrate the threshold and check the "
        "export; saved as validation.parquet in the model folder (default 0.2)",
    )
    p.add_argument(
        "--target-fpr",
        type=float,
        default=0.01,
        help="false-positive rate among validation normals the threshold allows (default 0.01)",
    )
    ray_options(p)
    p.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="with --workers: restarts of a crashed worker group, each resuming from the "
        "latest checkpoint (default 0)",
    )


def _tune(sub) -> None:
    """Search lambda_entropy, lambda_consistency (log-uniform) and eta, optionally lr and
    latent size, on a Parquet table at any fsspec URL. Every trial trains ESAD's own
    budget (or --epochs), the defaults first; trials are ranked by validation AUROC
    after their last epoch and the defaults win unless a trial beats them; the winner
    is refitted on all rows. One-worker trials train inside their Tune trial; with
    --workers-per-trial N each trial runs Ray Train. Writes results.parquet/.csv (one
    row per trial) under --storage/<experiment>/ and prints the best config and
    checkpoint. RAY_ADDRESS joins a cluster, else Ray starts locally.
    """
    p = command(
        sub,
        _tune,
        help="search the loss weights with Ray Tune",
    )
    urls(p, data="Parquet table URL; label column optional")
    label_column(p)
    id_columns(p)
    p.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    p.add_argument(
        "--epochs", type=int, default=None, help="exact epochs per trial (default: ESAD's budget)"
    )
    p.add_argument(
        "--searcher",
        default="random",
        help="random (every trial trains its budget), asha (random + ASHA) or optuna (TPE + ASHA)",
    )
    p.add_argument(
        "--grace-period", type=int, default=None, help="ASHA's first rung in reports (half)"
    )
    p.add_argument("--tune-lr", action="store_true", help="also search the learning rate")
    p.add_argument("--tune-latent", action="store_true", help="also search the latent size")
    p.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials")
    p.add_argument("--no-refit", action="store_true", help="skip refitting the winner")
    validation_fraction(p)
    p.add_argument("--experiment", default=None, help="run name under --storage")
    seed_and_threads(p)
    ray_options(p, per_trial=True)


def _train_run(sub) -> None:
    """Search and train one retraining run's model on the splits its ingest prepared
    (--prepared, the folder holding manifest.json), as the retraining flow's steps do:
    writes runs/<version>/model/ and runs/<version>/training-job.json under --storage,
    which the flow's export step reads. The Ray job the flow submits with
    EDE_RAY_SUBMIT=jobs; in a Ray job RAY_ADDRESS is the job's cluster, else Ray starts
    locally.
    """
    p = command(
        sub,
        _train_run,
        help="a retraining run's search and training (its Ray job)",
        name="train-run",
    )
    urls(
        p,
        prepared="prepared splits folder URL (from the flow's ingest)",
        storage="the run's storage root URL (runs/<version>/ is written under it)",
        version="the run's registry version id",
    )
    p.add_argument("--trials", type=int, default=0, help="search trials; 0: ESAD's defaults")
    p.add_argument("--epochs", type=int, default=None, help="exact epochs (default: ESAD's budget)")
    p.add_argument("--batch-size", type=int, default=None, help="default: ESAD's")
    p.add_argument("--target-fpr", type=float, default=0.01, help="threshold's FPR (0.01)")
    p.add_argument("--no-refit", action="store_true", help="ship the fit-rows model, no refit")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per training (1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (1)"
    )
    seed_and_threads(p)


def _export(sub) -> None:
    """Export the model folder written by `ede train` to --out: model.onnx (input x: raw
    rows, dynamic batch; outputs score and is_anomaly), metadata.json and, with
    --quantize int8 / int8-static, model.int8.onnx / model.int8-static.onnx. Checks
    onnxruntime-vs-torch parity (max relative difference 1e-4) on the validation rows,
    else fails with nothing written. The threshold is the one ede train calibrated,
    unless --target-fpr or --validation asks for a new one.
    """
    p = command(
        sub,
        _export,
        help="export a trained model to ONNX (scaling and threshold inside the graph)",
    )
    urls(
        p, model="model folder URL (from ede train)", out="artifact folder URL (written atomically)"
    )
    p.add_argument(
        "--quantize",
        choices=["int8", "int8-static"],
        action="append",
        default=None,
        help="add model.int8.onnx (dynamic) or model.int8-static.onnx (static QDQ, "
        "calibrated on the validation rows); repeat for both",
    )
    p.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="re-calibrate the threshold at this FPR among validation normals "
        "(default: keep the threshold ede train calibrated)",
    )
    p.add_argument(
        "--validation",
        default=None,
        help="validation table URL to re-calibrate on, at ede train's rate unless --target-fpr "
        "(default: <model>/validation.parquet, threshold kept)",
    )
    threads(p)


def _report(sub) -> None:
    """Rebuild a retraining run's HTML report (figures embedded, nothing fetched) from
    what it stored: --run is the published version's folder, models/<name>/<version>/,
    on any fsspec URL.
    """
    p = command(sub, _report, help="rebuild a run's HTML report from storage")
    urls(p, run="published version folder URL (holds report.json)", out="HTML file URL")
    threads(p, "unused: drawing is single-threaded")


def _score(sub) -> None:
    """Score a Parquet/CSV file, folder/prefix or glob (any fsspec URL, s3:// included)
    with --model's model.onnx, streaming in record batches. Writes <output>/<input
    stem>.parquet per input: pass-through columns (default: every column the model does
    not use) plus score and is_anomaly, atomically. Existing outputs are skipped unless
    --overwrite, so rerunning after a crash finishes the job. <output>/_ede-scored.json
    records the model and, per output, its input and rows; a prefix scored with
    another model is refused unless --overwrite. The summary states the score drift
    against the model's validation scores (PSI, median, share above threshold);
    <output>/_ede-drift.json keeps it, per input file, for the last 30 runs.
    """
    p = command(sub, _score, help="score tables in object storage with an exported model")
    urls(
        p,
        model="artifact folder URL (from ede export)",
        input="file, folder/prefix or glob URL",
        output="output folder/prefix URL",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=65536,
        help="rows per record batch read and row group written (65536)",
    )
    threads(p, "onnxruntime threads (default 1)")
    p.add_argument(
        "--overwrite", action="store_true", help="redo existing outputs, even another model's"
    )
    p.add_argument(
        "--id-columns", type=comma_list, default=None, help="comma list of columns to pass through"
    )
    p.add_argument("--int8", action="store_true", help="use model.int8.onnx (--variant int8)")
    p.add_argument(
        "--variant",
        choices=["fp32", "int8", "int8-static"],
        default="fp32",
        help="which exported graph scores (default fp32)",
    )


def _bench(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks, side by side in one process")
    benches = bench.add_subparsers(dest="bench", required=True)
    for add in (_bench_odds, _bench_digits, _bench_images, _bench_score, _bench_train):
        add(benches)


def _bench_odds(sub) -> None:
    """ESAD, its autoencoder ablation, DeepOD's DeepSAD, IsolationForest and a supervised
    HistGradientBoosting on identical disjoint splits; prints a markdown table of AUROC
    and writes every run to --json.
    """
    p = command(sub, _bench_odds, help="ESAD vs peers on ODDS tables (Deep SAD's protocol)")
    data_dir(p)
    p.add_argument("--datasets", type=comma_list, default=None, help="comma list (default: all 5)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--gamma-l", type=float, default=0.05, help="share of labelled anomalies")
    p.add_argument("--gamma-p", type=float, default=0.0, help="pollution of unlabelled data")
    p.add_argument("--methods", type=comma_list, default=None, help="comma list (default: all)")
    report(p, "torch/BLAS threads (default 1)")


def _bench_digits(sub) -> None:
    """Each digit as the normal class, the others anomalies, a few labelled."""
    p = command(
        sub, _bench_digits, help="conv ESAD on scikit-learn's 8x8 digits, ten one-vs-rest tasks"
    )
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--gamma-l", type=float, default=0.05)
    report(p, TORCH_THREADS)


def _bench_images(sub) -> None:
    """Each digit as the normal class of a 28x28 task (scikit-learn's digits, deformed
    onto 28x28: ede.bench.image_data), the others anomalies, gamma_l of the training set
    labelled; ESAD on the images, DeepOD's DeepSAD and IsolationForest on them flattened.
    Prints AUROC and fit seconds per task and method, and the means.
    """
    p = command(sub, _bench_images, help="conv ESAD vs peers on 28x28 one-vs-rest digit tasks")
    p.add_argument(
        "--tasks", type=comma_list, default=None, help="normal digits, comma list (default: 0-9)"
    )
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--gamma-l", type=float, default=0.05, help="share of labelled anomalies")
    p.add_argument("--methods", type=comma_list, default=None, help="comma list (default: all)")
    p.add_argument("--n-normal", type=int, default=None, help="normal images per task (8000)")
    p.add_argument("--n-anomaly", type=int, default=None, help="anomalies per task (2000)")
    report(p, TORCH_THREADS)


def _bench_score(sub) -> None:
    """Trains the default MLP briefly on a generated 21-feature table, exports it, and
    measures rows/s at batch 4096 on 1 thread each, `ede score` from a local S3 server
    (moto) against a plain pyarrow read, and peak RSS at 1x and 10x rows.
    """
    p = command(
        sub,
        _bench_score,
        help="scoring throughput: torch vs onnxruntime fp32/int8 vs a NumPy roofline, "
        "end to end from loopback S3, peak memory",
    )
    p.add_argument("--rows", type=int, default=2_000_000, help="table rows (2,000,000)")
    p.add_argument(
        "--s3",
        action="store_true",
        help="only `ede score` from loopback S3 on --rows rows and a tenth of them, each in "
        "a fresh process: rows/s and peak RSS (the table is written in chunks, never held)",
    )
    report(p, "threads per engine (default 1)")


def _bench_train(sub) -> None:
    """On shuttle (or --dataset): per-epoch wall time after warm-up of the in-process
    loop in fp32 and in bf16 autocast, TorchTrainer with 1 worker and with 2 workers
    (same global batch), as ratios to the fp32 in-process loop; the core's fp32, bf16
    and int8 GEMM limits; Ray start-up seconds; final validation AUROC. Then fp32 and
    bf16 for the image defaults (the conv net, its whole step budget) on a 28x28 task.
    """
    p = command(
        sub,
        _bench_train,
        help="epoch time: in-process fp32 vs bf16 vs Ray TorchTrainer with 1 and 2 workers",
    )
    data_dir(p)
    p.add_argument("--dataset", default="shuttle")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    p.add_argument("--warmup", type=int, default=2, help="epochs left out of timing (2)")
    p.add_argument(
        "--no-ray",
        dest="ray",
        action="store_false",
        default=None,
        help="only the in-process fp32 and bf16 runs",
    )
    p.add_argument(
        "--no-images",
        dest="images",
        action="store_false",
        default=None,
        help="skip fp32 vs bf16 for the image defaults on a 28x28 task",
    )
    p.add_argument(
        "--image-normals", type=int, default=None, help="normal images of that task (8000)"
    )
    p.add_argument(
        "--image-max-steps",
        type=int,
        default=None,
        help="steps of each image run (default: the image defaults' budget)",
    )
    report(p, "torch threads per process (1)")
