"""wgan_gp.py: the gradient penalty against hand-computed values, and a critic without BatchNorm."""
import pytest
import torch
import torch.nn as nn

import wgan_gp

NO_AMP = torch.autocast("cpu", enabled=False)  # gradient_penalty's amp context, off: float32 throughout


class Linear(nn.Module):
    """D(x) = <w, x> over C, H, W: its input gradient is w for every sample, so the penalty is (||w|| - 1)^2."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape))

    def forward(self, x, y=None):
        return (x * self.w).flatten(1).sum(1)


class HalfSquare(nn.Module):
    """D(x) = ||x||^2 / 2 per sample: its input gradient at x^ is x^ itself, a different norm for each sample."""

    def forward(self, x, y=None):
        return 0.5 * (x ** 2).flatten(1).sum(1)


def test_the_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    D = Linear((3, 4, 4))
    real, fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    expected = (D.w.detach().norm() - 1) ** 2  # the same at every x^, whatever eps is
    assert wgan_gp.gradient_penalty(D, real, fake, None, NO_AMP).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_norm_is_per_sample_over_C_H_W_and_eps_is_per_sample():
    torch.manual_seed(0)
    real = torch.randn(5, 3, 4, 4)
    # real == fake: x^ = real whatever eps; the gradient is x^, so the penalty is mean_i (||real_i||_2 - 1)^2
    expected = ((real.flatten(1).norm(dim=1) - 1) ** 2).mean()
    got = wgan_gp.gradient_penalty(HalfSquare(), real, real.clone(), None, NO_AMP)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    for wrong in ((real.norm(dim=1) - 1) ** 2).mean(), ((real.norm() - 1) ** 2):  # over channels only; whole batch
        assert abs(wrong.item() - expected.item()) > 0.1
    # real = 1, fake = 0: x^ = eps_i everywhere in sample i, so ||grad_i|| = eps_i sqrt(C H W) for one eps per sample
    torch.manual_seed(7)
    eps = torch.rand(5, 1, 1, 1).flatten()
    expected = ((eps * 48 ** 0.5 - 1) ** 2).mean()
    torch.manual_seed(7)
    got = wgan_gp.gradient_penalty(HalfSquare(), torch.ones(5, 3, 4, 4), torch.zeros(5, 3, 4, 4), None, NO_AMP)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_penalty_trains_the_critic_double_backward():
    torch.manual_seed(0)
    D = Linear((1, 4, 4))
    wgan_gp.gradient_penalty(D, torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4), None, NO_AMP).backward()
    w = D.w.detach()
    assert torch.allclose(D.w.grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-6)  # d/dw (||w|| - 1)^2
    # the real critic, conditional: every weight gets a gradient from the penalty alone (the output bias cannot
    # change an input gradient, nor can a shift that only moves where the last LeakyReLU bends)
    D = wgan_gp.Discriminator(channels=1, image_size=32, n_classes=3, width=8)
    y = torch.arange(6) % 3
    wgan_gp.gradient_penalty(D, torch.rand(6, 1, 32, 32), torch.rand(6, 1, 32, 32), y, NO_AMP).backward()
    weights = [(n, p) for n, p in D.named_parameters() if n.endswith("weight")]
    assert len(weights) == 7 and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in weights)


def test_the_critic_has_no_batchnorm_and_scores_each_sample_alone():
    G = wgan_gp.Generator(latent_dim=100, channels=3, image_size=64)
    D = wgan_gp.Discriminator(channels=3, image_size=64)
    assert not [m for m in D.modules() if isinstance(m, nn.BatchNorm2d)]
    norms = [m for m in D.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3 and all(m.num_groups == 1 for m in norms)  # layer norm over (C, H, W)
    # starting at scale 1 and shift 0, as the authors' Layernorm (not DCGAN's N(1, 0.02) of G's BatchNorm)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 4  # G keeps DCGAN's BatchNorm
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(D(x)[:1], D(x[:1]), atol=1e-5)  # a sample's score does not depend on the batch
    args = wgan_gp.parse_args([])
    assert (args.lr, args.beta1, args.beta2, args.gp_weight, args.d_steps, args.batch_size) == \
        (1e-4, 0.0, 0.9, 10.0, 5, 64)


def test_a_critic_step_logs_the_penalty_and_the_estimate():
    torch.manual_seed(0)
    G = wgan_gp.Generator(latent_dim=8, channels=1, image_size=32, width=8)
    D = wgan_gp.Discriminator(channels=1, image_size=32, width=8)
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.0, 0.9))
    args = wgan_gp.parse_args(["--latent-dim", "8"])
    s = wgan_gp.train_step(G, D, opt_G, opt_D, torch.rand(8, 1, 32, 32) * 2 - 1, None, args, update_G=False)
    # loss/d = -W + lambda * penalty, each part logged on its own
    assert s["loss/d"].item() == pytest.approx(-s["wasserstein/estimate"].item() + s["loss/gp"].item(), abs=1e-5)
    assert s["loss/gp"] > 0 and s["loss/g"] is None and all(p.grad is None for p in G.parameters())
