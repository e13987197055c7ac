"""The encoder-decoder-encoder module and its anomaly score.

    x --E1--> z1 --D--> x_hat --E2--> z2

Score (higher = more anomalous):

    score = mean((x_hat - x)^2) / s_rec + mean(z2^2) / s_ent

s_rec and s_ent are the mean of each term over the unlabelled training rows,
measured once after training. Without them the larger-scale term drowns the
other; NOTES.md saw either term alone lose up to 5 AUROC points. They live in
buffers, so an exported graph carries them.
"""

from __future__ import annotations

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
        return rec / self.score_scale[0] + ent / self.score_scale[1]  # (n,)
