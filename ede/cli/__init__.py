"""The `ede` command line. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

EXIT_BAD_INPUT = 2


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ede",
        description="ESAD semi-supervised anomaly detection: train, benchmark, score.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="fit ESAD on a table and save the model",
        description="Fit ESAD in this process on a table (.parquet, .csv or .npz at any fsspec "
        "URL: s3://, file://, a local path) and save it (weights + JSON) under --out.",
    )
    train.add_argument("--data", required=True, help="table URL; label column optional")
    train.add_argument("--out", required=True, help="model folder URL (written atomically)")
    train.add_argument("--label-column", default="label", help="1 = known anomaly (default: label)")
    train.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    train.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of rows held out (stratified) to calibrate the threshold and check the "
        "export; saved as validation.parquet in the model folder (default 0.2)",
    )
    train.add_argument(
        "--target-fpr",
        type=float,
        default=0.01,
        help="false-positive rate among validation normals the threshold allows (default 0.01)",
    )
    _distributed_options(train)
    train.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="with --workers: restarts of a crashed worker group, each resuming from the "
        "latest checkpoint (default 0)",
    )

    tune_p = sub.add_parser(
        "tune",
        help="search the loss weights with Ray Tune (each trial a Ray Train run)",
        description="Search lambda_entropy, lambda_consistency (log-uniform) and eta, optionally "
        "lr and latent size, on a Parquet table at any fsspec URL. Every trial trains a fixed "
        "epoch budget; ASHA stops weak trials early; trials are ranked by validation AUROC at "
        "the final epoch; the winner is refitted on all rows. Writes results.parquet/.csv "
        "(one row per trial) under --storage/<experiment>/ and prints the best config and "
        "checkpoint. RAY_ADDRESS joins a cluster, else Ray starts locally.",
    )
    tune_p.add_argument("--data", required=True, help="Parquet table URL; label column optional")
    tune_p.add_argument("--label-column", default="label", help="1 = known anomaly")
    tune_p.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    tune_p.add_argument("--epochs", type=int, default=20, help="epoch budget per trial (20)")
    tune_p.add_argument(
        "--searcher", default="asha", help="asha (random + ASHA) or optuna (TPE + ASHA)"
    )
    tune_p.add_argument(
        "--grace-period", type=int, default=None, help="ASHA's first rung (default: epochs/2)"
    )
    tune_p.add_argument("--tune-lr", action="store_true", help="also search the learning rate")
    tune_p.add_argument("--tune-latent", action="store_true", help="also search the latent size")
    tune_p.add_argument("--max-concurrent", type=int, default=None, help="cap on concurrent trials")
    tune_p.add_argument("--no-refit", action="store_true", help="skip refitting the winner")
    tune_p.add_argument("--validation-fraction", type=float, default=0.2)
    tune_p.add_argument("--experiment", default=None, help="run name under --storage")
    tune_p.add_argument("--seed", type=int, default=0)
    tune_p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    _distributed_options(tune_p, per_trial=True)

    export = sub.add_parser(
        "export",
        help="export a trained model to ONNX (scaling and threshold inside the graph)",
        description="Export the model folder written by `ede train` to --out: model.onnx "
        "(input x: raw rows, dynamic batch; outputs score and is_anomaly), metadata.json and, "
        "with --quantize int8, model.int8.onnx. Checks onnxruntime-vs-torch parity (max "
        "relative difference 1e-4) on the validation rows, else fails with nothing written.",
    )
    export.add_argument("--model", required=True, help="model folder URL (from ede train)")
    export.add_argument("--out", required=True, help="artifact folder URL (written atomically)")
    export.add_argument("--quantize", choices=["int8"], default=None, help="add model.int8.onnx")
    export.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help="re-calibrate the threshold at this FPR among validation normals "
        "(default: the rate ede train used, else 0.01)",
    )
    export.add_argument(
        "--validation",
        default=None,
        help="validation table URL (default: <model>/validation.parquet)",
    )
    export.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")

    score = sub.add_parser(
        "score",
        help="score tables in object storage with an exported model",
        description="Score a Parquet/CSV file, folder/prefix or glob (any fsspec URL, s3:// "
        "included) with --model's model.onnx, streaming in record batches. Writes "
        "<output>/<input stem>.parquet per input: pass-through columns (default: every column "
        "the model does not use) plus score and is_anomaly, atomically. Existing outputs are "
        "skipped unless --overwrite, so rerunning after a crash finishes the job.",
    )
    score.add_argument("--model", required=True, help="artifact folder URL (from ede export)")
    score.add_argument("--input", required=True, help="file, folder/prefix or glob URL")
    score.add_argument("--output", required=True, help="output folder/prefix URL")
    score.add_argument(
        "--batch-size",
        type=int,
        default=65536,
        help="rows per record batch read and row group written (65536)",
    )
    score.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    score.add_argument("--overwrite", action="store_true", help="redo existing outputs")
    score.add_argument(
        "--id-columns", type=_csv, default=None, help="comma list of columns to pass through"
    )
    score.add_argument("--int8", action="store_true", help="use model.int8.onnx")

    bench = sub.add_parser("bench", help="benchmarks, side by side in one process")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    odds = bench_sub.add_parser(
        "odds",
        help="ESAD vs peers on ODDS tables (Deep SAD's protocol)",
        description="ESAD, its autoencoder ablation, DeepOD's DeepSAD, IsolationForest and a "
        "supervised HistGradientBoosting on identical disjoint splits; prints a markdown "
        "table of AUROC and writes every run to --json.",
    )
    odds.add_argument("--data-dir", required=True, help="folder of <dataset>.npz (keys X, y)")
    odds.add_argument("--datasets", type=_csv, default=None, help="comma list (default: all 5)")
    odds.add_argument("--seeds", type=int, default=5)
    odds.add_argument("--gamma-l", type=float, default=0.05, help="share of labelled anomalies")
    odds.add_argument("--gamma-p", type=float, default=0.0, help="pollution of unlabelled data")
    odds.add_argument("--methods", type=_csv, default=None, help="comma list (default: all)")
    odds.add_argument("--json", required=True, help="where to write the report")
    odds.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1)")

    digits = bench_sub.add_parser(
        "digits",
        help="conv ESAD on scikit-learn's 8x8 digits, ten one-vs-rest tasks",
        description="Each digit as the normal class, the others anomalies, a few labelled.",
    )
    digits.add_argument("--seeds", type=int, default=1)
    digits.add_argument("--gamma-l", type=float, default=0.05)
    digits.add_argument("--json", required=True)
    digits.add_argument("--threads", type=int, default=1)

    bscore = bench_sub.add_parser(
        "score",
        help="scoring throughput: torch vs onnxruntime fp32/int8 vs a NumPy roofline, "
        "end to end from loopback S3, peak memory",
        description="Trains the default MLP briefly on a generated 21-feature table, exports "
        "it, and measures rows/s at batch 4096 on 1 thread each, `ede score` from a local S3 "
        "server (moto) against a plain pyarrow read, and peak RSS at 1x and 10x rows.",
    )
    bscore.add_argument("--json", required=True, help="where to write the report")
    bscore.add_argument("--rows", type=int, default=2_000_000, help="table rows (2,000,000)")
    bscore.add_argument("--threads", type=int, default=1, help="threads per engine (default 1)")

    btrain = bench_sub.add_parser(
        "train",
        help="epoch time: in-process loop vs Ray TorchTrainer with 1 and 2 workers",
        description="On shuttle (or --dataset): per-epoch wall time after warm-up of the "
        "in-process loop, TorchTrainer with 1 worker and with 2 workers (same global batch), "
        "as ratios to the in-process loop; Ray start-up seconds; final validation AUROC.",
    )
    btrain.add_argument("--data-dir", required=True, help="folder of <dataset>.npz (keys X, y)")
    btrain.add_argument("--dataset", default="shuttle")
    btrain.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    btrain.add_argument("--warmup", type=int, default=2, help="epochs left out of timing (2)")
    btrain.add_argument("--json", required=True, help="where to write the report")
    btrain.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    return parser


def _distributed_options(p: argparse.ArgumentParser, per_trial: bool = False) -> None:
    workers = "--workers-per-trial" if per_trial else "--workers"
    p.add_argument(
        workers,
        dest="workers",
        type=int,
        default=1 if per_trial else None,
        help="Ray Train workers per trial (default 1)"
        if per_trial
        else "train with Ray Train on N workers (DDP); without it, train in this process",
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (1)"
    )
    p.add_argument(
        "--storage",
        required=per_trial,
        default=None,
        help="fsspec URL (s3://, file://, path) for Ray checkpoints and results",
    )


def _set_threads(n: int, torch_too: bool = True) -> None:
    if torch_too:  # `ede score` runs onnxruntime only: no need to load torch for it
        import torch

        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - shipped with scikit-learn
        pass


def _write_json(url: str, report: dict) -> None:
    from ede.storage import write_bytes_atomic

    write_bytes_atomic(url, json.dumps(report, indent=2).encode())


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_train(args) -> None:
    """Fit on all but a validation split; the split calibrates the threshold and stays in
    the model folder, so `ede export` can check parity and report metrics on unseen rows."""
    import numpy as np
    import pandas as pd

    from ede.core.estimator import ESAD
    from ede.data import provenance
    from ede.data.protocol import validation_split
    from ede.data.tables import read_table
    from ede.export.calibration import calibrate_threshold
    from ede.storage import shown_url

    if not 0.0 <= args.target_fpr < 1.0:  # before the data is read and the net fitted
        raise ValueError(f"--target-fpr {args.target_fpr}: must be in [0, 1)")
    if args.workers is not None:
        return _train_distributed(args)
    table = read_table(args.data, label_column=args.label_column)
    y = table.y if table.y is not None else np.zeros(len(table.X), dtype=np.int64)
    X_fit, y_fit, X_val, y_val = validation_split(
        table.X, y, fraction=args.validation_fraction, seed=args.seed
    )
    val_table = provenance.validation_table(X_val, y_val, table.feature_names, args.label_column)
    params = {"seed": args.seed}
    if args.epochs is not None:  # exactly this many: lift the step floor and cap
        params.update(epochs=args.epochs, min_steps=None, max_steps=None)
    names = table.feature_names
    det = ESAD(**params).fit(pd.DataFrame(X_fit, columns=names), y_fit)  # keeps the names
    scores = det.decision_function(pd.DataFrame(X_val, columns=names)).astype(np.float32)
    cal = calibrate_threshold(scores, y_val, args.target_fpr)
    det.threshold_ = cal.threshold
    record = {
        "label_column": args.label_column,
        "validation_fraction": args.validation_fraction,
        "calibration": cal.to_dict(),
        "data": {
            "source": shown_url(args.data),
            "rows": len(table.X),
            "rows_sha256": provenance.rows_sha256(table.X, table.y),
            "fit_rows": len(X_fit),
            "validation_rows": len(X_val),
        },
    }
    # Validation rows and provenance first: ESAD.save writes esad.json last, the marker
    # of a complete model folder.
    provenance.write_validation(args.out, val_table)
    provenance.write_provenance(args.out, record)
    det.save(args.out)
    n_labelled = 0 if table.y is None else int(table.y.sum())
    print(
        f"read {len(table.X)} rows ({n_labelled} labelled anomalies); fit on {len(X_fit)}, "
        f"validation {len(X_val)} ({int(y_val.sum())} labelled); threshold {cal.threshold:.6g} "
        f"at target FPR {cal.target_fpr:g}; model: {args.out}"
    )


def _train_distributed(args) -> None:
    """`ede train --workers N`: Ray Train reads the Parquet table shard by shard; the model
    folder is the same as in-process training writes (validation rows, provenance, model)."""
    from ede.core.estimator import ESAD
    from ede.distributed import cluster
    from ede.distributed import trainer as dt
    from ede.distributed.model_folder import train_model_folder
    from ede.storage import shown_url

    scaling = cluster.Scaling(args.workers, args.gpu, args.cpus_per_worker)
    scaling.check()
    if not args.storage:
        raise ValueError("--workers needs --storage URL: Ray keeps checkpoints there")
    storage = cluster.storage_path(args.storage)
    data = dt.prepare_data(
        args.data,
        label_column=args.label_column,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
    params = {"seed": args.seed}
    if args.epochs is not None:
        params.update(epochs=args.epochs, min_steps=None, max_steps=None)
    cluster.connect(log_to_driver=True)
    run = dt.RunSpec(storage, max_failures=args.max_failures)
    trained = train_model_folder(
        ESAD(**params),
        data,
        args.out,
        scaling,
        run,
        label_column=args.label_column,
        target_fpr=args.target_fpr,
        record={
            "validation_fraction": args.validation_fraction,
            "data": {"source": shown_url(args.data)},
        },
    )
    last = trained.det.history_[-1] if trained.det.history_ else {}
    print(
        f"trained on {args.workers} worker(s); validation AUROC "
        f"{trained.final_val_auroc:.4f} at epoch {last.get('epoch')}; "
        f"checkpoint: {trained.checkpoint.path}; model: {args.out}"
    )


def cmd_tune(args) -> None:
    from ede.core.estimator import ESAD
    from ede.distributed import cluster, tuning

    spec = tuning.SearchSpec(
        trials=args.trials,
        epochs=args.epochs,
        searcher=args.searcher,
        grace_period=args.grace_period,
        tune_lr=args.tune_lr,
        tune_latent=args.tune_latent,
        max_concurrent=args.max_concurrent,
        refit=not args.no_refit,
        seed=args.seed,
    )
    spec.check()
    scaling = cluster.Scaling(args.workers, args.gpu, args.cpus_per_worker)
    scaling.check()
    storage = cluster.storage_path(args.storage)
    cluster.connect(log_to_driver=True)
    scaling.check_cluster()
    out = tuning.search(
        ESAD(seed=args.seed),
        args.data,
        storage,
        spec,
        scaling,
        label_column=args.label_column,
        validation_fraction=args.validation_fraction,
        experiment=args.experiment,
    )
    shown = ", ".join(f"{k}={v:.4g}" for k, v in out.best_params.items())
    print(
        f"best trial {out.best_trial}: validation AUROC {out.best_val_auroc:.4f} at the final "
        f"epoch; {shown}\nresults: {out.table_url}.parquet (.csv); checkpoint: {out.checkpoint}"
        f"\n{len(out.table)} trials in {out.wall_s:.0f} s"
    )


def cmd_export(args) -> None:
    from ede.export.exporter import export_folder, summary_lines

    meta = export_folder(
        args.model,
        args.out,
        target_fpr=args.target_fpr,
        quantize=args.quantize,
        validation=args.validation,
    )
    print("\n".join(summary_lines(meta, args.out)))


def cmd_score(args) -> None:
    from ede.scoring.batch import score

    summary = score(
        args.model,
        args.input,
        args.output,
        batch_size=args.batch_size,
        threads=args.threads,
        overwrite=args.overwrite,
        id_columns=args.id_columns,
        variant="int8" if args.int8 else "fp32",
    )
    print(summary.line())


def cmd_bench(args) -> None:
    if args.bench == "score":
        from ede.bench import scoring

        report = scoring.run(rows=args.rows, threads=args.threads, log=_log)
        _write_json(args.json, report)
        print(scoring.markdown(report))
        return
    if args.bench == "train":
        from ede.bench import train

        report = train.run(
            args.data_dir, dataset=args.dataset, epochs=args.epochs, warmup=args.warmup, log=_log
        )
        _write_json(args.json, report)
        print(train.markdown(report))
        return
    if args.bench == "odds":
        from ede.bench import odds

        report = odds.run_odds(
            args.data_dir,
            datasets=args.datasets or odds.ODDS_DATASETS,
            seeds=args.seeds,
            gamma_l=args.gamma_l,
            gamma_p=args.gamma_p,
            methods=args.methods or odds.METHODS,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        _write_json(args.json, report)
        print(odds.markdown(report))
    else:
        from ede.bench import digits

        report = digits.run_digits(
            seeds=args.seeds,
            gamma_l=args.gamma_l,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        _write_json(args.json, report)
        print(digits.markdown(report))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    _set_threads(args.threads, torch_too=args.command != "score")
    try:
        commands = {"train": cmd_train, "tune": cmd_tune, "export": cmd_export, "score": cmd_score}
        commands.get(args.command, cmd_bench)(args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"ede {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
