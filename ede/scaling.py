"""Deep SAD's preprocessing (standardise, then min-max) as ONE affine map per feature.

Both steps are affine, so their composition is x' = (x - offset) * scale: one
subtraction and one multiplication, cheap to run and trivial to bake into an
exported graph. Tables get one (offset, scale) per feature; images one per
channel, so the picture is not distorted pixel by pixel.
"""

from __future__ import annotations

import numpy as np


class AffineScaler:
    def fit(self, X: np.ndarray) -> AffineScaler:
        axes = (0,) if X.ndim == 2 else (0, 2, 3)
        X = X.astype(np.float64)
        mean = X.mean(axis=axes, keepdims=True)
        std = X.std(axis=axes, keepdims=True)
        std = np.where(std > 0, std, 1.0)  # constant feature: standardises to 0
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


class IdentityScaler(AffineScaler):
    """For data the caller has already scaled."""

    def fit(self, X: np.ndarray) -> IdentityScaler:
        shape = (X.shape[1],) if X.ndim == 2 else (X.shape[1], 1, 1)
        self.offset_ = np.zeros(shape, dtype=np.float32)
        self.scale_ = np.ones(shape, dtype=np.float32)
        return self
