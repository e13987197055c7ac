"""ede: ESAD, end-to-end deep semi-supervised anomaly detection, as a training pipeline."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["ESAD", "__version__"]


def __getattr__(name: str):
    # Lazy (PEP 562): `ede score` and other torch-free paths do not pay torch's import.
    if name == "ESAD":
        from ede.core.estimator import ESAD

        return ESAD
    raise AttributeError(f"module 'ede' has no attribute {name!r}")
