"""Options that several `ede` commands take, each declared once, so a flag means and
says the same wherever it appears.
"""

from __future__ import annotations

import argparse

TORCH_THREADS = "torch threads (default 1)"


def comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def command(sub, declare, help: str, name: str | None = None) -> argparse.ArgumentParser:
    """The subcommand that `declare` (`_train`, `_bench_odds`, ...) fills in, named after
    it (or `name`). Its docstring is the description `--help` prints, so the text a user
    reads sits beside the options it describes."""
    name = name or declare.__name__.rsplit("_", 1)[-1]
    description = " ".join((declare.__doc__ or "").split()) or None  # None: python -OO
    return sub.add_parser(name, help=help, description=description)


def urls(p, **helps: str) -> None:
    """What a command reads and writes (--data, --model, --out, ...): always required."""
    for name, help in helps.items():
        p.add_argument(f"--{name}", required=True, help=help)


def label_column(p) -> None:
    """A named label column that is absent is an error (`ede.data.columns.label_present`);
    --no-label says the data have none."""
    label = p.add_mutually_exclusive_group()
    label.add_argument(
        "--label-column", default="label", help="1 = known anomaly (default: label; must exist)"
    )
    label.add_argument(
        "--no-label",
        dest="label_column",
        action="store_const",
        const=None,
        help="the data are unlabelled: every row is trained on as normal",
    )


def id_columns(p) -> None:
    """Training's features are every numeric column but the label and these
    (`ede.core.checks.feature_columns`); a declared one that is absent is an error."""
    p.add_argument(
        "--id-columns",
        type=comma_list,
        default=None,
        help="comma list of id/pass-through columns, not features (each must exist)",
    )


def seed_and_threads(p) -> None:
    p.add_argument("--seed", type=int, default=0)
    threads(p)


def threads(p, help: str = TORCH_THREADS) -> None:
    """Every command takes --threads: `ede.cli.main` caps the thread pools with it."""
    p.add_argument("--threads", type=int, default=1, help=help)


def validation_fraction(p, help: str | None = None) -> None:
    p.add_argument("--validation-fraction", type=float, default=0.2, help=help)


def data_dir(p) -> None:
    p.add_argument("--data-dir", required=True, help="folder of <dataset>.npz (keys X, y)")


def report(p, threads_help: str) -> None:
    p.add_argument("--json", required=True, help="where to write the report")
    threads(p, threads_help)


def ray_options(p, per_trial: bool = False) -> None:
    """Ray Train's resources: `train` without --workers trains in process; every `tune`
    trial is a Ray Train run, whose checkpoints need a place (--storage)."""
    p.add_argument(
        "--workers-per-trial" if per_trial else "--workers",
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
        "--verbose",
        action="store_true",
        help="print Ray's worker logs and Tune's progress tables (off: ede's summary only)",
    )
    p.add_argument(
        "--storage",
        required=per_trial,
        default=None,
        help="fsspec URL (s3://, file://, path) for Ray checkpoints and results",
    )
