"""The encoder and decoder networks, for tables (MLP) and images (LeNet-like conv).

Read top to bottom in forward order: config, encoders, decoders, factories.
Biases are kept: Deep SAD drops them to avoid a trivial hypersphere collapse,
but ESAD's reconstruction term already rules that collapse out, and bias-free
layers cost up to 4 AUROC points on one tabular set in a prototype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    """Filled by `ESAD.net_config` from the estimator's parameters (their one owner)."""

    input_shape: tuple[int, ...]  # (d,) for tables, (c, h, w) for images
    hidden: tuple[int, ...]  # MLP widths, input side first
    latent_dim: int
    conv_channels: tuple[int, ...]  # one 2x pooling stage per entry
    negative_slope: float = 0.1  # LeakyReLU, as Deep SAD

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


# ----------------------------------------------------------------------------- MLP


class MLPEncoder(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        (d,) = cfg.input_shape
        layers: list[nn.Module] = []
        for width in cfg.hidden:
            layers += [nn.Linear(d, width), nn.LeakyReLU(cfg.negative_slope)]
            d = width
        layers.append(nn.Linear(d, cfg.latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (n, d) -> (n, latent)


class MLPDecoder(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        (d_out,) = cfg.input_shape
        layers: list[nn.Module] = []
        d = cfg.latent_dim
        for width in reversed(cfg.hidden):
            layers += [nn.Linear(d, width), nn.LeakyReLU(cfg.negative_slope)]
            d = width
        layers.append(nn.Linear(d, d_out))  # linear output: scaled test data may leave [0, 1]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (n, latent) -> (n, d)


# ----------------------------------------------------------------------------- conv


def _conv_grid(cfg: NetConfig) -> tuple[int, int]:
    _, h, w = cfg.input_shape
    factor = 2 ** len(cfg.conv_channels)
    if h % factor or w % factor:
        raise ValueError(
            f"image size {h}x{w} must be divisible by {factor} "
            f"({len(cfg.conv_channels)} pooling stages)"
        )
    return h // factor, w // factor


class ConvEncoder(nn.Module):
    """LeNet-like, as Deep SAD's MNIST/CIFAR nets: 5x5 conv + LeakyReLU + 2x2 max-pool per stage."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        c = cfg.input_shape[0]
        layers: list[nn.Module] = []
        for ch in cfg.conv_channels:
            layers += [
                nn.Conv2d(c, ch, 5, padding=2),
                nn.LeakyReLU(cfg.negative_slope),
                nn.MaxPool2d(2),
            ]
            c = ch
        gh, gw = _conv_grid(cfg)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * gh * gw, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))  # (n, c, h, w) -> (n, latent)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: each stage doubles the grid with a stride-2 transposed conv."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.grid = _conv_grid(cfg)
        chans = list(reversed(cfg.conv_channels))
        self.c0 = chans[0]
        self.fc = nn.Linear(cfg.latent_dim, chans[0] * self.grid[0] * self.grid[1])
        layers: list[nn.Module] = [nn.LeakyReLU(cfg.negative_slope)]
        for c_in, c_out in zip(chans, chans[1:] + [chans[-1]], strict=True):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 2, stride=2),
                nn.LeakyReLU(cfg.negative_slope),
                nn.Conv2d(c_out, c_out, 5, padding=2),
                nn.LeakyReLU(cfg.negative_slope),
            ]
        layers.append(nn.Conv2d(chans[-1], cfg.input_shape[0], 5, padding=2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, *self.grid)  # (n, latent) -> (n, c0, h/f, w/f)
        return self.net(h)  # -> (n, c, h, w)


# ----------------------------------------------------------------------------- factories


def make_encoder(cfg: NetConfig) -> nn.Module:
    return ConvEncoder(cfg) if cfg.is_image else MLPEncoder(cfg)


def make_decoder(cfg: NetConfig) -> nn.Module:
    return ConvDecoder(cfg) if cfg.is_image else MLPDecoder(cfg)
