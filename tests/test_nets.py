"""Shapes through the encoder-decoder-encoder for tables and the three image sizes."""

import pytest
import torch

from ede import ESAD
from ede.core.model import EncoderDecoderEncoder


@pytest.mark.parametrize(
    "shape", [(9,), (1, 8, 8), (1, 28, 28), (3, 32, 32)], ids=["table", "8x8", "28x28", "32x32x3"]
)
def test_forward_shapes(shape):
    net = EncoderDecoderEncoder(ESAD(latent_dim=12).net_config(shape))
    x = torch.rand(5, *shape)
    x_hat, z1, z2 = net(x)
    assert x_hat.shape == x.shape
    assert z1.shape == z2.shape == (5, 12)
    assert net.score(x).shape == (5,)


def test_second_encoder_has_own_weights_unless_shared():
    own = EncoderDecoderEncoder(ESAD().net_config((4,)))
    shared = EncoderDecoderEncoder(ESAD().net_config((4,)), share_encoders=True)
    assert own.encoder2 is not own.encoder
    assert shared.encoder2 is shared.encoder
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in own.parameters())


def test_image_size_must_fit_pooling():
    with pytest.raises(ValueError, match="divisible by 4"):
        EncoderDecoderEncoder(ESAD().net_config((1, 10, 10)))
