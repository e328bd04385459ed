"""sngan.py: every weight of D spectrally normalised (largest singular value 1 after training steps), the hinge losses
against hand-computed values, a D step that leaves G alone, the paper's standard CNN and setting C (the shared
contract, exact resume with the power-iteration buffers included, is in test_scripts.py)."""
import pytest
import torch
import torch.nn as nn

import sngan
from test_lsgan import Fixed, Mean, images


def normalised(D):
    """D's spectrally normalised layers: every module with a parametrised weight."""
    return [m for m in D.modules() if hasattr(m, "parametrizations")]


@pytest.mark.parametrize("n_classes", [0, 3])
def test_after_training_steps_every_weight_of_D_has_largest_singular_value_1(n_classes):
    """Measured on the weight D computes with (W / sigma(W)), reshaped to (out, in x kh x kw) as the paper does."""
    torch.manual_seed(0)
    G = sngan.Generator(latent_dim=8, channels=1, image_size=32, n_classes=n_classes, width=8)
    D = sngan.Discriminator(channels=1, image_size=32, n_classes=n_classes, width=8)
    layers = normalised(D)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 and set(layers) == set(convs + [D.out] + ([D.embed] if n_classes else []))
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))  # 10x the default: weights that move
    args = sngan.parse_args(["--latent-dim", "8"])
    raw = [m.parametrizations.weight.original.detach().clone() for m in layers]
    labels = torch.arange(16) % 3 if n_classes else None
    for _ in range(5):
        sngan.train_step(G, D, opt_G, opt_D, torch.rand(16, 1, 32, 32) * 2 - 1, labels, args, True)
    assert all(not torch.equal(w, m.parametrizations.weight.original) for w, m in zip(raw, layers))  # trained
    D.eval()  # read the weights with the vectors the last step left, without another power iteration
    with torch.no_grad():
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item()
            raw_sigma = torch.linalg.matrix_norm(m.parametrizations.weight.original.flatten(1), ord=2).item()
            assert abs(sigma - 1) < 0.05 and abs(raw_sigma - 1) > 0.05, (m, sigma, raw_sigma)


def test_the_hinge_losses_against_hand_computed_values():
    r, f = [1.5, 0.2, -0.4], [0.1, -1.7, 0.5]  # D(x) and D(G(z)): some beyond the margins, some inside
    G, D = Fixed(images(f)), Mean()
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0), torch.optim.SGD(D.parameters(), lr=0)
    stats = sngan.train_step(G, D, opt_G, opt_D, images(r), None, sngan.parse_args(["--latent-dim", "8"]), True)
    d_loss = sum(max(0, 1 - x) for x in r) / 3 + sum(max(0, 1 + x) for x in f) / 3
    assert stats["loss/d"].item() == pytest.approx(d_loss, rel=1e-6)
    assert stats["loss/g"].item() == pytest.approx(-sum(f) / 3, rel=1e-6)
    # D's gradient: only the samples inside the margins count (real 0.2 and -0.4, fakes 0.1 and 0.5)
    assert D.w.grad.item() == pytest.approx((-(0.2 - 0.4) + (0.1 + 0.5)) / 3, rel=1e-5)


def test_a_D_step_leaves_G_untouched():
    torch.manual_seed(0)
    G = sngan.Generator(latent_dim=8, channels=1, image_size=32, width=8)
    D = sngan.Discriminator(channels=1, image_size=32, width=8)
    opt_G, opt_D = torch.optim.Adam(G.parameters(), lr=2e-4), torch.optim.Adam(D.parameters(), lr=2e-4)
    before = [p.clone() for p in G.parameters()]
    d_before = [p.clone() for p in D.parameters()]
    stats = sngan.train_step(G, D, opt_G, opt_D, torch.rand(8, 1, 32, 32) * 2 - 1, None,
                             sngan.parse_args(["--latent-dim", "8"]), update_G=False)
    assert all(torch.equal(a, b) for a, b in zip(before, G.parameters()))
    assert all(p.grad is None for p in G.parameters())  # not even a gradient: no graph through G was kept
    assert not all(torch.equal(a, b) for a, b in zip(d_before, D.parameters())) and stats["loss/g"] is None


def test_the_standard_cnn_and_setting_C():
    G = sngan.Generator(latent_dim=128, channels=3, image_size=32)
    D = sngan.Discriminator(channels=3, image_size=32)
    convs = [m for m in D.features if isinstance(m, nn.Conv2d)]  # Table 3, top to bottom
    assert [(m.kernel_size[0], m.stride[0], m.out_channels) for m in convs] == \
        [(3, 1, 64), (4, 2, 64), (3, 1, 128), (4, 2, 128), (3, 1, 256), (4, 2, 256), (3, 1, 512)]
    assert [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)] == [0.1] * 7
    assert not [m for m in D.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))]
    assert D.out.in_features == 512 * 4 * 4
    assert G.dense[0].out_features == 512 * 4 * 4 and isinstance(G.dense[1], nn.BatchNorm1d)
    deconvs = [m for m in G.net if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in deconvs] == [256, 128, 64] and all(m.kernel_size == (4, 4) for m in deconvs)
    assert isinstance(G.net[-2], nn.Conv2d) and G.net[-2].kernel_size == (3, 3) and isinstance(G.net[-1], nn.Tanh)
    x = G(torch.randn(2, 128))
    assert x.shape == (2, 3, 32, 32) and D(x).shape == (2,)
    big = sngan.Discriminator(channels=3, image_size=64)  # the 64x64 extension: one more pair of convolutions
    assert sum(isinstance(m, nn.Conv2d) for m in big.modules()) == 9
    assert sngan.Generator(latent_dim=128, channels=3, image_size=64)(torch.randn(2, 128)).shape == (2, 3, 64, 64)
    args = sngan.parse_args([])
    assert (args.lr, args.beta1, args.beta2, args.d_steps, args.batch_size, args.latent_dim) == \
        (2e-4, 0.5, 0.999, 1, 64, 128)
