"""Input scaling as ONE affine map per feature: x' = (x - offset) * scale.

One subtraction and one multiplication, cheap to run and trivial to bake into an
exported graph. Tables get one (offset, scale) per feature; images one per
channel, so the picture is not distorted pixel by pixel.

- `AffineScaler`: Deep SAD's preprocessing (standardise, then min-max; both steps
  are affine, so they compose into one map). The peers' scaler in the benchmarks.
- `QuantileMinMaxScaler`: min-max on the 1st and 99th percentiles; ESAD's default
  (`scaling="quantile_minmax"`), chosen on validation splits (README).
- `IdentityScaler`: data already scaled.
"""

from __future__ import annotations

import numpy as np


def _axes(X: np.ndarray) -> tuple[int, ...]:
    """Per feature for tables, per channel for images."""
    return (0,) if X.ndim == 2 else (0, 2, 3)


def _mean_std(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = _axes(X)
    mean = X.mean(axis=axes, keepdims=True)
    std = X.std(axis=axes, keepdims=True)
    return mean, np.where(std > 0, std, 1.0)  # constant feature: standardises to 0


class AffineScaler:
    def fit(self, X: np.ndarray) -> AffineScaler:
        axes = _axes(X)
        X = X.astype(np.float64)
        mean, std = _mean_std(X)
        z = (X - mean) / std
        lo, hi = z.min(axis=axes, keepdims=True), z.max(axis=axes, keepdims=True)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        # (x - mean)/std - lo) / span  ==  (x - (mean + lo*std)) * 1/(std*span)
        self.offset_ = (mean + lo * std)[0].astype(np.float32)
        self.scale_ = (1.0 / (std * span))[0].astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.offset_) * self.scale_).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"offset": self.offset_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> AffineScaler:
        s = cls()
        s.offset_ = np.asarray(d["offset"], dtype=np.float32)
        s.scale_ = np.asarray(d["scale"], dtype=np.float32)
        return s


class QuantileMinMaxScaler(AffineScaler):
    """Min-max on the 1st and 99th percentiles: x' = (x - q01) / (q99 - q01), per feature.

    Plain min-max lets each feature's most extreme training value set its range, so
    on a heavy-tailed feature the bulk of the rows is squeezed into a sliver of
    [0, 1] (shuttle: the normal rows' standard deviations run from 0.003 to 0.07) and
    its reconstruction errors vanish beside the other features'. On the percentiles
    the bulk of every feature spans [0, 1] alike; the tails fall outside, which the
    linear decoder output allows. A feature whose percentiles coincide falls back to
    its min-max span (1 if constant).
    """

    QUANTILE = 1.0  # percent cut from each end

    def fit(self, X: np.ndarray) -> QuantileMinMaxScaler:
        axes = _axes(X)
        X = X.astype(np.float64)
        lo, hi = np.percentile(X, [self.QUANTILE, 100 - self.QUANTILE], axis=axes, keepdims=True)
        span = hi - lo
        full = X.max(axis=axes, keepdims=True) - X.min(axis=axes, keepdims=True)
        span = np.where(span > 0, span, np.where(full > 0, full, 1.0))
        self.offset_ = lo[0].astype(np.float32)
        self.scale_ = (1.0 / span)[0].astype(np.float32)
        return self


class IdentityScaler(AffineScaler):
    """For data the caller has already scaled."""

    def fit(self, X: np.ndarray) -> IdentityScaler:
        shape = (X.shape[1],) if X.ndim == 2 else (X.shape[1], 1, 1)
        self.offset_ = np.zeros(shape, dtype=np.float32)
        self.scale_ = np.ones(shape, dtype=np.float32)
        return self
