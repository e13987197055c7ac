"""28x28 one-vs-rest image tasks from scikit-learn's 8x8 digits, with no download.

MNIST-sized tasks would need a download; scikit-learn ships 1,797 8x8 digits (about 180
per class). Each image here is one of them mapped onto a 28x28 grid by a seeded random
affine map (upsampling by about 3.5, a small rotation, scale change and shift; bilinear),
plus a little Gaussian pixel noise, clipped to [0, 1]. So a class has as many distinct
images as asked for, deterministically for a seed.

What this measures: detection of a digit class under small deformations. Every image is a
deformed copy of one of about 180 originals per class, so test normals have siblings in
the training set; it is not a test of generalisation to new writers.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.ndimage import affine_transform
from sklearn.datasets import load_digits

SIZE = 28
ZOOM = SIZE / 8  # 8x8 -> 28x28
MAX_DEGREES = 10.0  # rotation, uniform in +-MAX_DEGREES
MAX_SCALE = 0.1  # relative scale change, uniform in +-MAX_SCALE
MAX_SHIFT = 2.0  # pixels of the 28x28 grid, uniform in +-MAX_SHIFT per axis
NOISE = 0.03  # std of the Gaussian pixel noise, on the [0, 1] range


@cache  # parsing the bundled CSV costs more than deforming a few hundred images
def _originals() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images / 16.0).astype(np.float64), d.target  # (1797, 8, 8) in [0, 1]


def _deform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 image onto the 28x28 grid: rotated, scaled and shifted about its centre."""
    angle = np.deg2rad(rng.uniform(-MAX_DEGREES, MAX_DEGREES))
    zoom = ZOOM * (1.0 + rng.uniform(-MAX_SCALE, MAX_SCALE))
    c, s = np.cos(angle), np.sin(angle)
    # affine_transform maps output coordinates to input ones: the inverse of the deformation
    matrix = np.array([[c, s], [-s, c]]) / zoom
    out_centre = (SIZE - 1) / 2 + rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2)
    in_centre = np.full(2, (8 - 1) / 2)
    offset = in_centre - matrix @ out_centre
    return affine_transform(image, matrix, offset, output_shape=(SIZE, SIZE), order=1)


def digit_images(digit: int, n: int, seed: int) -> np.ndarray:
    """`n` deformed 28x28 images of `digit`, (n, 1, 28, 28) float32 in [0, 1]; the
    originals are cycled through in a seeded order, so each is used about equally."""
    images, target = _originals()
    pool = images[target == digit]
    rng = np.random.default_rng([seed, digit])
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])
    out = np.stack([_deform(pool[i], rng) for i in order[:n]])
    out += rng.normal(0.0, NOISE, size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)[:, None]


def one_vs_rest(
    normal: int, n_normal: int, n_anomaly: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n_normal` images of `normal` (y = 0) and `n_anomaly` of the nine other digits in
    equal shares (y = 1), shuffled: the input of `ede.data.protocol.semi_supervised_split`.
    """
    others = [d for d in range(10) if d != normal]
    counts = np.full(len(others), n_anomaly // len(others))
    counts[: n_anomaly % len(others)] += 1
    parts = [digit_images(normal, n_normal, seed)]
    parts += [digit_images(d, int(k), seed) for d, k in zip(others, counts, strict=True)]
    X = np.concatenate(parts)
    y = np.r_[np.zeros(n_normal), np.ones(n_anomaly)].astype(np.int64)
    order = np.random.default_rng([seed, normal, 10]).permutation(len(y))
    return X[order], y[order]
