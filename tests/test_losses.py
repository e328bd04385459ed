"""The GAN, DCGAN and WGAN training steps on hand-computed values. D has one weight, D(x) = a * mean(x) (test_lsgan's
Mean), and G draws two fixed 4x4 images of the value c (test_lsgan's Fixed), so the step's losses and the change of
each weight (plain SGD, lr 0.1) can be written out: a wrong sign, scale or term in either loss, or a G loss taken on
the D from before its update, changes a figure. (LSGAN's, WGAN-GP's and SN-GAN's have such tests in their files.)"""
import math

import pytest
import torch

import dcgan
import vanilla_gan
import wgan
from test_lsgan import Fixed, Mean, images

A, C, LR = 0.5, 0.3, 0.1
M = (0.8, -0.4)  # the two real images' means


def step(script, *flags):
    """-> the step's figures, D's weight a and G's pixels (all c before the step: one value after it too)."""
    G, D = Fixed(images([C, C])), Mean()
    with torch.no_grad():
        D.w.fill_(A)
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=LR), torch.optim.SGD(D.parameters(), lr=LR)
    stats = script.train_step(G, D, opt_G, opt_D, images(M), None, script.parse_args(["--latent-dim", "2", *flags]),
                              True)
    assert torch.allclose(G.images, G.images.flatten()[0])
    return stats, D.w.item(), G.images.flatten()[0].item()


def softplus(v):
    return math.log1p(math.exp(v))


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


@pytest.mark.parametrize("script", [vanilla_gan, dcgan], ids=["vanilla_gan", "dcgan"])
def test_the_gan_losses_and_updates_by_hand(script):
    """D minimises -log D(x) - log(1 - D(G(z))) = softplus(-d(x)) + softplus(d(G(z))); G minimises -log D(G(z)) =
    softplus(-d(G(z))), the non-saturating loss, judged by the D just updated."""
    stats, a, c = step(script)
    d_loss = sum(softplus(-A * m) for m in M) / 2 + softplus(A * C)
    grad_a = sum(-m * sigmoid(-A * m) for m in M) / 2 + C * sigmoid(A * C)  # d/da softplus(-a m) = -m sigmoid(-a m)
    a_new = A - LR * grad_a
    c_new = C + LR * a_new * sigmoid(-a_new * C) / 32  # -d/dc softplus(-a c) = a sigmoid(-a c), / 2 images x 16 pixels
    assert stats["loss/d"].item() == pytest.approx(d_loss, rel=1e-6)
    assert a == pytest.approx(a_new, rel=1e-6) and c == pytest.approx(c_new, rel=1e-6)
    assert stats["loss/g"].item() == pytest.approx(softplus(-a_new * C), rel=1e-6)
    assert stats["D(x)"].item() == pytest.approx(sum(sigmoid(A * m) for m in M) / 2, rel=1e-6)
    assert stats["D(G(z))"].item() == pytest.approx(sigmoid(A * C), rel=1e-6)


def test_the_wgan_losses_and_updates_by_hand():
    """The critic minimises E[D(G(z))] - E[D(x)], then its weights are clipped to [-c, c]; G minimises -E[D(G(z))],
    judged by the critic just updated and clipped. With --clip 10 nothing is clipped; with --clip 0.05 the weight
    lands on the bound."""
    stats, a, c = step(wgan, "--clip", "10")
    mean_real = sum(M) / 2
    a_new = A - LR * (C - mean_real)  # d/da (a c - a mean(real))
    assert stats["loss/d"].item() == pytest.approx(A * C - A * mean_real, rel=1e-6)
    assert stats["wasserstein/estimate"].item() == pytest.approx(A * mean_real - A * C, rel=1e-6)
    assert a == pytest.approx(a_new, rel=1e-6) and c == pytest.approx(C + LR * a_new / 32, rel=1e-6)
    assert stats["loss/g"].item() == pytest.approx(-a_new * C, rel=1e-6)
    stats, a, c = step(wgan, "--clip", "0.05")
    assert a == pytest.approx(0.05) and c == pytest.approx(C + LR * 0.05 / 32, rel=1e-6)  # G sees the clipped critic
