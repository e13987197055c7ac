"""What each `ede` command runs: its options turned into one library call, then the
call's summary printed. The work itself lives in the library, where the retraining
flow and Python callers reach the same code; imports are inside each command so that
`ede score` never loads torch and `ede train` without --workers never loads Ray.
"""

from __future__ import annotations

import importlib
import inspect
import sys


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def features_line(names: list[str]) -> str:
    """What training says it trained on: every feature, by name, on one line."""
    return f"features ({len(names)}): {', '.join(names)}"


def training_line(det) -> str:
    """The loss curve's last epochs and the weights the fit kept: a spike shows here."""
    from ede.core.loss_tail import loss_tail, loss_tail_line

    return loss_tail_line(loss_tail(det.history_))


def _esad(args):
    """ESAD as the options ask; --epochs means exactly that many, so it lifts the step
    floor and cap that otherwise stretch or cut a short or long run."""
    from ede.core.estimator import ESAD, with_epochs

    return with_epochs(ESAD(seed=args.seed), args.epochs)


def _scaling(args):
    from ede.distributed import cluster

    return cluster.Scaling(args.workers, args.gpu, args.cpus_per_worker)


def cmd_train(args) -> None:
    """In process, or on Ray Train with --workers; the same model folder either way."""
    if args.workers is not None:
        return _train_distributed(args)
    from ede.export.fitting import fit_model_folder

    got = fit_model_folder(
        _esad(args),
        args.data,
        args.out,
        label_column=args.label_column,
        validation_fraction=args.validation_fraction,
        target_fpr=args.target_fpr,
        id_columns=args.id_columns,
    )
    print(features_line(got.det.input_feature_names()))
    print(training_line(got.det))
    cal = got.calibration
    print(
        f"read {got.rows} rows ({got.labelled} labelled anomalies); fit on {got.fit_rows}, "
        f"validation {got.validation_rows} ({got.validation_labelled} labelled); threshold "
        f"{cal.threshold:.6g} at target FPR {cal.target_fpr:g}; model: {args.out}"
    )


def _train_distributed(args) -> None:
    from ede.distributed.model_folder import train_table_folder

    trained = train_table_folder(
        _esad(args),
        args.data,
        args.out,
        _scaling(args),
        args.storage,
        label_column=args.label_column,
        validation_fraction=args.validation_fraction,
        target_fpr=args.target_fpr,
        max_failures=args.max_failures,
        verbose=args.verbose,
        id_columns=args.id_columns,
    )
    print(features_line(trained.det.input_feature_names()))
    print(training_line(trained.det))
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
        verbose=int(args.verbose),
    )
    spec.check()
    scaling = _scaling(args)
    scaling.check()
    storage = cluster.storage_path(args.storage)
    cluster.connect(log_to_driver=args.verbose, train_v2=scaling.workers > 1)
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
        id_columns=args.id_columns,
    )
    shown = ", ".join(f"{k}={v:.4g}" for k, v in out.best_params.items())
    print(
        f"best trial {out.best_trial}: validation AUROC {out.best_val_auroc:.4f} after its last "
        f"epoch (defaults {out.defaults_val_auroc:.4f}); {shown}\n"
        f"results: {out.table_url}.parquet (.csv); checkpoint: {out.checkpoint}\n"
        f"{len(out.table)} trials in {out.wall_s:.0f} s"
    )


def cmd_train_run(args) -> None:
    from ede.pipeline import training_job

    run = training_job.TrainingRun.from_args(args)
    outcome, trained = training_job.run_here(run)
    searched = f"best trial {outcome.best_trial}; " if outcome is not None else ""
    print(
        f"{searched}validation AUROC {trained.final_val_auroc:.4f}; threshold "
        f"{trained.threshold:.6g}; model: {trained.out}; "
        f"result: {training_job.result_url(run.layout)}"
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
        variant="int8" if args.int8 else args.variant,
    )
    print(summary.line())


# `ede bench <name>`: (module, runner, markdown, pictures). The runner gets every option
# whose name is one of its parameters (an unset one keeps the runner's default) and a log
# to stderr; `pictures` (a module with `write(report, json_url)`) draws the report beside
# the JSON.
BENCHES = {
    "odds": ("ede.bench.odds", "run_odds", "markdown", "ede.reporting.bench"),
    "digits": ("ede.bench.digits", "run_digits", "markdown", None),
    "images": ("ede.bench.images", "run_images", "markdown", None),
    "score": ("ede.bench.scoring", "run", "markdown", None),
    "train": ("ede.bench.train", "run", "markdown", None),
}


def cmd_bench(args) -> None:
    from ede.storage import write_json

    module, runner, markdown, pictures = BENCHES[args.bench]
    bench = importlib.import_module(module)
    run = getattr(bench, runner)
    wanted = inspect.signature(run).parameters
    options = {k: v for k, v in vars(args).items() if k in wanted and v is not None}
    report = run(**options, log=_log)
    write_json(args.json, report)
    print(getattr(bench, markdown)(report))
    if pictures:
        print(f"report: {importlib.import_module(pictures).write(report, args.json)}")


def cmd_report(args) -> None:
    from ede.reporting.run import write

    print(f"report: {write(args.run, args.out)}")


COMMANDS = {
    "train": cmd_train,
    "tune": cmd_tune,
    "train-run": cmd_train_run,
    "export": cmd_export,
    "score": cmd_score,
    "report": cmd_report,
    "bench": cmd_bench,
}
