"""ede: ESAD, end-to-end deep semi-supervised anomaly detection, as a training pipeline."""

__version__ = "0.1.0"

from ede.estimator import ESAD  # noqa: E402

__all__ = ["ESAD", "__version__"]
