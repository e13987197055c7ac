"""`ESAD`, the detector as a scikit-learn / PyOD style estimator.

The constructor only stores its arguments (sklearn's `BaseEstimator` contract, so
`clone` and `get_params` work); everything is validated and built in `fit`.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ede.core import persistence
from ede.core.checks import check_shape, check_X, check_y
from ede.core.model import anomaly_score
from ede.core.nets import NetConfig
from ede.core.objective import ANOMALY_TARGETS
from ede.core.precision import PRECISIONS
from ede.core.scaling import AffineScaler, IdentityScaler, QuantileMinMaxScaler
from ede.core.training import (
    ArrayShard,
    LocalRuntime,
    TrainConfig,
    batched_scores,
    score_scales,
    train_loop,
)

SCALERS = {
    "standard_minmax": AffineScaler,
    "quantile_minmax": QuantileMinMaxScaler,
    "none": IdentityScaler,
}


# Levels at which a fit records its training normals' score quantiles
# (`train_score_quantiles_`): every percent, and a log-spaced upper tail down to 1e-5,
# where thresholds at a target false-positive rate lie. They let a threshold chosen for one
# fit be carried to a refit of the same configuration
# (`ede.export.calibration.transfer_threshold`).
TRAIN_SCORE_LEVELS = np.unique(
    np.concatenate([np.linspace(0.0, 1.0, 101), 1.0 - np.geomspace(0.1, 1e-5, 81)])
)


class ESAD(BaseEstimator):
    """End-to-end deep semi-supervised anomaly detector (Huang et al., 2020).

    y in `fit`: 1 = known (labelled) anomaly, 0 = normal or unlabelled; y=None is
    the unsupervised case. `decision_function` is higher for more anomalous rows
    (PyOD's sign, the opposite of scikit-learn's IsolationForest). `predict` gives
    1 for rows whose score exceeds `threshold_`, the (1 - contamination) quantile of
    the unlabelled training rows' scores.

    Training runs `epochs` epochs, clipped so that it makes between `min_steps` and
    `max_steps` optimizer steps (None lifts a bound); batches keep the labelled
    anomalies' natural share. The learning rate falls linearly to 0 over the last
    `lr_decay_fraction` of the steps, and a fit whose last epoch's loss spiked returns
    the weights of its lowest-loss epoch (`ede.core.loss_guard`; `history_[-1]` says
    which), so a late loss spike never ships (benchmarks/loss_spikes.py).

    Image inputs (the conv model) also stop at `image_max_steps`, a cost constraint: the
    tables' step floor makes image fits too long for a retraining flow, and the (8, 16)
    net reached the old budget's validation AUROC within the cap
    (`benchmarks/select_image_defaults.py`). Tables never read it.

    `scaling` is the per-feature affine map fitted on the training rows
    (`ede.core.scaling`): "quantile_minmax" (default: min-max on the 1st and 99th
    percentiles, so heavy-tailed features are not squeezed by their extremes),
    "standard_minmax" (Deep SAD's) or "none". This signature is the one place the
    defaults live; they were chosen on validation splits carved from training data
    (README, benchmarks/select_defaults.py).

    `precision`: the training step's arithmetic (`ede.core.precision`): "fp32", "bf16"
    (autocast, fp32 master weights and loss terms) or "auto" (bf16 on CUDA and on CPUs
    with AMX, else fp32). Scoring and the exported graph are fp32 whatever it is. The
    default stays fp32: `ede bench train` measured bf16 epochs about 2x as long as fp32's
    on CPUs without AMX (AVX512-BF16 or AVX2), and no AMX or GPU was at hand (README).
    """

    def __init__(
        self,
        *,
        lambda_entropy: float = 0.1,
        lambda_consistency: float = 0.1,
        eta: float = 1.0,
        hidden: tuple[int, ...] = (128, 64),
        latent_dim: int = 16,
        conv_channels: tuple[int, ...] = (8, 16),
        epochs: int = 100,
        min_steps: int | None = 1000,
        max_steps: int | None = 3000,
        image_max_steps: int | None = 160,
        batch_size: int = 256,
        lr: float = 1e-3,
        lr_decay_fraction: float = 0.3,
        weight_decay: float = 1e-6,
        anomaly_target: str = "invert",
        share_encoders: bool = False,
        scaling: str = "quantile_minmax",
        contamination: float = 0.01,
        device: str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
    ):
        self.lambda_entropy = lambda_entropy
        self.lambda_consistency = lambda_consistency
        self.eta = eta
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.conv_channels = conv_channels
        self.epochs = epochs
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.image_max_steps = image_max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay_fraction = lr_decay_fraction
        self.weight_decay = weight_decay
        self.anomaly_target = anomaly_target
        self.share_encoders = share_encoders
        self.scaling = scaling
        self.contamination = contamination
        self.device = device
        self.precision = precision
        self.seed = seed

    # ------------------------------------------------------------------ configs

    def net_config(self, input_shape: tuple[int, ...]) -> NetConfig:
        return NetConfig(
            input_shape=tuple(int(s) for s in input_shape),
            hidden=tuple(int(h) for h in self.hidden),
            latent_dim=int(self.latent_dim),
            conv_channels=tuple(int(c) for c in self.conv_channels),
        )

    def train_config(self, image: bool = False) -> TrainConfig:
        """`image`: the input is (c, h, w), so `image_max_steps` caps the steps too."""
        return TrainConfig(
            lambda_entropy=float(self.lambda_entropy),
            lambda_consistency=float(self.lambda_consistency),
            eta=float(self.eta),
            epochs=int(self.epochs),
            min_steps=None if self.min_steps is None else int(self.min_steps),
            max_steps=self._max_steps(image),
            batch_size=int(self.batch_size),
            lr=float(self.lr),
            lr_decay_fraction=float(self.lr_decay_fraction),
            weight_decay=float(self.weight_decay),
            anomaly_target=self.anomaly_target,
            share_encoders=bool(self.share_encoders),
            seed=int(self.seed),
            precision=str(self.precision),
        )

    def _max_steps(self, image: bool) -> int | None:
        caps = [self.max_steps] + ([self.image_max_steps] if image else [])
        caps = [int(c) for c in caps if c is not None]
        return min(caps) if caps else None

    def _check_params(self) -> None:
        def bad(name, why):
            raise ValueError(f"{name}={getattr(self, name)!r}: {why}")

        for name in ("lambda_entropy", "lambda_consistency"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        for name in ("eta", "lr"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("min_steps", "max_steps", "image_max_steps"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                bad(name, "must be >= 1 or None")
        if self.min_steps is not None and self.max_steps is not None:
            if self.min_steps > self.max_steps:
                bad("min_steps", f"must not exceed max_steps={self.max_steps}")
        for name in ("epochs", "batch_size", "latent_dim"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if not 0 <= self.lr_decay_fraction <= 1:
            bad("lr_decay_fraction", "must be in [0, 1]")
        if not 0 <= self.contamination < 1:
            bad("contamination", "must be in [0, 1)")
        if self.anomaly_target not in ANOMALY_TARGETS:
            bad("anomaly_target", f"must be one of {ANOMALY_TARGETS}")
        if self.scaling not in SCALERS:
            bad("scaling", f"must be one of {tuple(SCALERS)}")
        if self.precision not in PRECISIONS:
            bad("precision", f"must be one of {PRECISIONS}")

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r}: no CUDA device is available")
        return torch.device(self.device)

    # ------------------------------------------------------------------ fit

    def fit(self, X, y=None) -> ESAD:
        """Learn the scaler, the network, the score scales and the threshold."""
        self._check_params()
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        X = check_X(X)
        y = check_y(y, len(X))
        if (y == 0).sum() == 0:
            raise ValueError("y marks every row as a known anomaly; ESAD needs unlabelled rows")
        device = self._device()
        scaler = SCALERS[self.scaling]().fit(X)
        Xs = scaler.transform(X)
        config = {
            "net": asdict(self.net_config(X.shape[1:])),
            "train": asdict(self.train_config(image=X.ndim == 4)),
            "data": ArrayShard(Xs, y),
        }
        runtime = LocalRuntime(device)
        net = train_loop(config, runtime)
        rec, ent = batched_scores(net, Xs, device)
        return self.finish_fit(net, scaler, rec, ent, y, runtime.history, names)

    def finish_fit(self, net, scaler, rec, ent, y, history, feature_names=None) -> ESAD:
        """The end of every fit, in memory or on Ray Train: the score scales from the
        training rows' score parts (`rec`, `ent`, labels `y`), the training threshold and
        the fitted attributes. Ray's driver calls it after a streaming pass over its rows."""
        s_rec, s_ent = score_scales(rec, ent, y)
        net.score_scale.copy_(torch.tensor([s_rec, s_ent]))
        train_scores = anomaly_score(rec, ent, s_rec, s_ent)
        self.net_ = net.eval()
        self.scaler_ = scaler
        self.input_shape_ = tuple(int(s) for s in net.cfg.input_shape)
        self.n_features_in_ = int(np.prod(self.input_shape_))
        normal_scores = train_scores[y == 0]
        self.threshold_ = float(np.quantile(normal_scores, 1 - self.contamination))
        self.train_score_quantiles_ = np.quantile(normal_scores, TRAIN_SCORE_LEVELS)
        self.history_ = list(history)
        if feature_names is not None:  # scikit-learn's convention for DataFrame input
            self.feature_names_in_ = np.asarray(feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    # ------------------------------------------------------------------ score

    def decision_function(self, X) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous (float64, shape (n,))."""
        check_is_fitted(self, "net_")
        X = check_X(X)
        check_shape(X, self.input_shape_)
        device = next(self.net_.parameters()).device
        rec, ent = batched_scores(self.net_, self.scaler_.transform(X), device)
        s_rec, s_ent = self.net_.score_scale.tolist()
        return anomaly_score(rec, ent, s_rec, s_ent).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """1 = anomaly (score > threshold_), 0 = normal."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str) -> None:
        """A state dict and a JSON file under `path` (any fsspec URL); no pickled code."""
        check_is_fitted(self, "net_")
        persistence.save(self, path)

    def input_feature_names(self) -> list[str]:
        """Column names in input order (f0.. without names); [] for images."""
        if hasattr(self, "feature_names_in_"):
            return [str(n) for n in self.feature_names_in_]
        if len(self.input_shape_) == 1:
            return [f"f{i}" for i in range(self.input_shape_[0])]
        return []  # images: one input tensor, no column names

    @classmethod
    def load(cls, path: str, device: str = "cpu") -> ESAD:
        return persistence.load(cls, path, device)


def with_epochs(det: ESAD, epochs: int | None) -> ESAD:
    """`det` itself for None (its validated step budget: every default path trains that),
    else a copy that trains exactly `epochs` epochs, the step floor and caps lifted so
    they neither stretch nor cut a deliberately short or long run (tests, quick looks)."""
    if epochs is None:
        return det
    return clone(det).set_params(
        epochs=int(epochs), min_steps=None, max_steps=None, image_max_steps=None
    )
