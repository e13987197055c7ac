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
    return parser


def _set_threads(n: int) -> None:
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


def cmd_train(args) -> None:
    from ede.estimator import ESAD
    from ede.tables import read_table

    table = read_table(args.data, label_column=args.label_column)
    params = {"seed": args.seed}
    if args.epochs is not None:
        params["epochs"] = args.epochs
    det = ESAD(**params).fit(table.X, table.y)
    det.save(args.out)
    n_labelled = 0 if table.y is None else int(table.y.sum())
    print(f"trained on {len(table.X)} rows ({n_labelled} labelled anomalies); model: {args.out}")


def cmd_bench(args) -> None:
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
    _set_threads(args.threads)
    try:
        {"train": cmd_train, "bench": cmd_bench}[args.command](args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"ede {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
