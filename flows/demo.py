"""`make demo`: the retraining flow, then the scoring flow, on the embedded defaults.

Nothing to configure: Prefect's ephemeral API, a local Ray, a local folder standing
in for object storage, and scikit-learn's breast cancer data (benign = normal,
malignant = anomaly) written there as Parquet. Anomalies are rare in the tables
ede is built for, so the training table keeps every benign case and a seeded
sample of 40 malignant ones, all labelled; the scoring batch is the full dataset
without its label, as new data arrives. Run it twice: the second retrain reuses the
prepared splits and keeps or replaces the champion by the promotion rule.

Point the same flows at S3/MinIO, a Prefect server and a Ray cluster with
environment variables only (README: "Running the flows for real"); given a URL
(`python -m flows.demo s3://ede-data/demo`), the demo's data and models go there,
and Prefect and Ray are what the environment says (infra/README.md, "Local stack").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEMO_ROOT = Path(".demo")
N_MALIGNANT = 40


def _offline_defaults(root: Path) -> None:
    """Prefect settings that matter offline: a private PREFECT_HOME, telemetry off (its calls
    fail without a network) and a start-up timeout long enough for the ephemeral API server
    on a busy two-core machine (it can take 20 s). Each one yields to the environment."""
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str((root / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def write_demo_data(storage: Path | str, seed: int = 0) -> tuple[str, str]:
    """(training table URL, scoring batch URL) under `storage`, a folder or a URL."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["label"] = (frame.pop("target") == 0).astype("int64")  # sklearn: 0 = malignant
    rng = np.random.default_rng(seed)
    malignant = np.flatnonzero(frame["label"].to_numpy() == 1)
    keep = np.sort(
        np.r_[np.flatnonzero(frame["label"] == 0), rng.choice(malignant, N_MALIGNANT, False)]
    )
    base = str(storage).rstrip("/")
    if "://" not in base:
        for folder in ("incoming", "batches"):
            Path(base, folder).mkdir(parents=True, exist_ok=True)
    train_url = f"{base}/incoming/breast_cancer.parquet"
    frame.iloc[keep].to_parquet(train_url, index=False)  # fsspec: s3:// too
    batch = frame.drop(columns="label")
    batch.insert(0, "patient_id", np.arange(len(batch)))
    batch_url = f"{base}/batches/2026-11-29.parquet"
    batch.to_parquet(batch_url, index=False)
    return train_url, batch_url


def main(root: Path | str = DEMO_ROOT) -> dict:
    """The demo under `root`: a local folder (Prefect offline, local Ray), or a storage
    URL, with Prefect and Ray as the environment configures them."""
    if "://" in str(root):
        storage = str(root).rstrip("/")
    else:
        _offline_defaults(Path(root))
        storage = str((Path(root) / "storage").resolve())
    from ede.pipeline.markdown import drift_line
    from flows.retrain import retrain
    from flows.score import score

    train_url, batch_url = write_demo_data(storage)
    out = retrain(data_url=train_url, storage_url=storage)  # the flow's own defaults
    scored = score(
        input_url=batch_url,
        output_url=f"{storage}/scores",
        storage_url=storage,
        overwrite=True,
    )
    test, old = out["test"], out["champion_test"]
    print("\n== ede demo: retrain then score ==")
    print(f"champion: {out['champion_url']}")
    print(
        f"candidate {out['version']}: test AUROC {test['auroc']:.3f}, AUPRC {test['auprc']:.3f} "
        f"on {test['rows']} held-out rows ({test['labelled_anomalies']} malignant)"
        + (f"; champion before: AUROC {old['auroc']:.3f}" if old else "")
    )
    print(f"decision: {'promoted' if out['promoted'] else 'kept the champion'} ({out['reason']})")
    print(
        f"scored {scored['rows']} rows, flagged {scored['anomalies']} "
        f"({100 * scored['anomalies'] / max(scored['rows'], 1):.1f}%)"
    )
    print(f"outputs: {scored['output_url']}")
    print(drift_line(scored["drift"]))
    print(f"report: {out.get('report_url') or 'not written (the run log says why)'}")
    return {"retrain": out, "score": scored}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEMO_ROOT)
