"""The encoder-decoder-encoder module, its anomaly score, and the graph that ships.

    x --E1--> z1 --D--> x_hat --E2--> z2

Score (higher = more anomalous):

    score = mean((x_hat - x)^2) / s_rec + mean(z2^2) / s_ent

s_rec and s_ent are the mean of each term over the unlabelled training rows,
measured once after training. Without them the larger-scale term drowns the
other (a prototype saw either term alone lose up to 5 AUROC points). They live
in buffers, so an exported graph carries them. `anomaly_score` is the formula's
only copy: torch tensors and NumPy arrays alike go through it.

`InferenceWrapper` is what export turns into ONNX: raw rows in, the affine scaling,
the network, the score and the threshold inside, all as buffers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ede.core.nets import NetConfig, make_decoder, make_encoder
from ede.core.objective import per_sample_terms


class EncoderDecoderEncoder(nn.Module):
    def __init__(self, cfg: NetConfig, share_encoders: bool = False):
        super().__init__()
        self.cfg = cfg
        self.encoder = make_encoder(cfg)
        self.decoder = make_decoder(cfg)
        self.encoder2 = self.encoder if share_encoders else make_encoder(cfg)
        self.register_buffer("score_scale", torch.ones(2))  # (s_rec, s_ent)

    def forward(self, x: torch.Tensor):
        z1 = self.encoder(x)  # (n, latent)
        x_hat = self.decoder(z1)  # (n, *input_shape)
        z2 = self.encoder2(x_hat)  # (n, latent)
        return x_hat, z1, z2

    def score_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_hat, z1, z2 = self(x)
        rec, ent, _ = per_sample_terms(x, x_hat, z1, z2)
        return rec, ent

    def score(self, x: torch.Tensor) -> torch.Tensor:
        rec, ent = self.score_parts(x)
        return anomaly_score(rec, ent, self.score_scale[0], self.score_scale[1])  # (n,)


def anomaly_score(rec, ent, s_rec, s_ent):
    """The score from its two parts and their scales (tensors or arrays, float32 in, out)."""
    return rec / s_rec + ent / s_ent


class InferenceWrapper(nn.Module):
    """Raw rows -> (score, is_anomaly); the scaler and threshold ride along as buffers."""

    def __init__(self, net: nn.Module, offset: np.ndarray, scale: np.ndarray, threshold: float):
        super().__init__()
        self.net = net
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self.net.score((x - self.offset) * self.scale)  # (n, *shape) -> (n,)
        return score, score > self.threshold
