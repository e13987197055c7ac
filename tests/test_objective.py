"""The objective's three terms, the labelled-anomaly inversion and its gradient directions."""

import pytest
import torch

from ede.core.objective import corrupt, esad_objective

W = dict(lambda_entropy=0.5, lambda_consistency=2.0)


def _batch(n=4, d=3, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    x_hat = torch.rand(n, d, generator=g)
    z1 = torch.randn(n, k, generator=g)
    z2 = torch.randn(n, k, generator=g)
    return x, x_hat, z1, z2


def test_unlabelled_terms_match_their_definitions():
    x, x_hat, z1, z2 = _batch()
    y = torch.zeros(4, dtype=torch.long)
    t = esad_objective(x, x_hat, z1, z2, y, **W)
    rec = ((x_hat - x) ** 2).mean(1)
    ent = (z2**2).mean(1)
    cons = ((z1 - z2) ** 2).mean(1)
    torch.testing.assert_close(t.reconstruction, rec.mean())
    torch.testing.assert_close(t.entropy, ent.mean())
    torch.testing.assert_close(t.consistency, cons.mean())
    torch.testing.assert_close(t.total, (rec + 0.5 * ent + 2.0 * cons).mean())


def test_labelled_anomaly_inverts_reconstruction_and_entropy():
    x, _, z1, z2 = _batch()
    y = torch.ones(4, dtype=torch.long)
    perfect = esad_objective(x, x, z1, z2, y, **W)
    inverted = esad_objective(x, 1 - x, z1, z2, y, **W)
    assert perfect.reconstruction > 0.01  # reconstructing x itself is now the error
    assert inverted.reconstruction == pytest.approx(0.0, abs=1e-12)
    ent = (z2**2).mean(1)
    torch.testing.assert_close(perfect.entropy, (1 / (ent + 1e-6)).mean())


def test_eta_weights_only_labelled_rows():
    x, x_hat, z1, z2 = _batch()
    y = torch.tensor([0, 0, 1, 1])
    base = esad_objective(x, x_hat, z1, z2, y, eta=1.0, **W)
    heavy = esad_objective(x, x_hat, z1, z2, y, eta=3.0, **W)
    only_unl = esad_objective(x[:2], x_hat[:2], z1[:2], z2[:2], y[:2], eta=3.0, **W)
    # total = mean over rows: (2 unlabelled + eta * 2 labelled) / 4
    unl_sum = only_unl.total * 2
    lab_sum = base.total * 4 - unl_sum
    torch.testing.assert_close(heavy.total * 4, unl_sum + 3.0 * lab_sum)


@pytest.mark.parametrize("label, sign", [(0, +1), (1, -1)])
def test_gradient_direction_on_latent_norm(label, sign):
    """Descent shrinks ||z2|| for unlabelled rows and grows it for labelled anomalies."""
    x, x_hat, z1, _ = _batch(n=1)
    z2 = torch.tensor([[0.6, -0.8]], requires_grad=True)
    t = esad_objective(
        x, x_hat, z1, z2, torch.tensor([label]), lambda_entropy=1.0, lambda_consistency=0.0
    )
    (grad,) = torch.autograd.grad(t.total, z2)
    norm_after = (z2 - 0.01 * grad).norm()
    assert (norm_after - z2.norm()).item() * sign < 0


@pytest.mark.parametrize("label", [0, 1])
def test_gradient_direction_on_reconstruction(label):
    """Descent moves x_hat towards x (unlabelled) or towards 1 - x (labelled anomaly)."""
    x = torch.tensor([[0.1, 0.9, 0.3]])
    x_hat = torch.full((1, 3), 0.5, requires_grad=True)
    z = torch.zeros(1, 2)
    t = esad_objective(
        x, x_hat, z, z, torch.tensor([label]), lambda_entropy=0.0, lambda_consistency=0.0
    )
    (grad,) = torch.autograd.grad(t.total, x_hat)
    target = x if label == 0 else 1 - x
    stepped = x_hat - 0.1 * grad
    assert (stepped - target).norm() < (x_hat - target).norm()


def test_consistency_pulls_encoders_together():
    x, x_hat, _, _ = _batch(n=1)
    z1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 1.0]])
    t = esad_objective(
        x, x_hat, z1, z2, torch.tensor([0]), lambda_entropy=0.0, lambda_consistency=1.0
    )
    (grad,) = torch.autograd.grad(t.total, z1)
    assert ((z1 - 0.1 * grad) - z2).norm() < (z1 - z2).norm()


def test_noise_target_and_unknown_target():
    x = torch.rand(64, 5)
    g = torch.Generator().manual_seed(0)
    noise = corrupt(x, "noise", g)
    assert noise.shape == x.shape and noise.min() >= 0 and noise.max() < 1
    assert not torch.allclose(noise, x)
    with pytest.raises(ValueError, match="anomaly_target"):
        corrupt(x, "blur")


def test_clipped_inversion_stays_on_the_unit_box():
    # a labelled anomaly outside the percentile box (x = 3 or -2) must not get a target
    # as far outside on the other side, as plain inversion gives it
    x = torch.tensor([[3.0, -2.0, 0.25]])
    assert corrupt(x, "invert").tolist() == [[-2.0, 3.0, 0.75]]
    assert corrupt(x, "invert_clipped").tolist() == [[0.0, 1.0, 0.75]]
