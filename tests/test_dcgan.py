"""dcgan.py: the networks as the paper builds them (the contract all scripts share is in test_scripts.py)."""
import pytest
import torch
import torch.nn as nn

import dcgan


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("n_classes", [0, 10])
def test_shapes(size, n_classes):
    G = dcgan.Generator(latent_dim=100, channels=3, image_size=size, n_classes=n_classes)
    D = dcgan.Discriminator(channels=3, image_size=size, n_classes=n_classes)
    z, y = torch.randn(5, 100), torch.arange(5)
    x = G(z, y if n_classes else None)
    assert x.shape == (5, 3, size, size)
    assert x.abs().max() <= 1  # Tanh output
    assert D(x, y if n_classes else None).shape == (5,)
    assert D.features(x).shape == (5, 64 * size // 8, 4, 4)


def test_paper_architecture():
    G = dcgan.Generator(latent_dim=100, channels=1, image_size=64)
    D = dcgan.Discriminator(channels=1, image_size=64)
    g = list(G.net)
    assert isinstance(g[-1], nn.Tanh) and isinstance(g[-2], nn.ConvTranspose2d)  # no BN on G's output
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g) == 4 and sum(isinstance(m, nn.ReLU) for m in g) == 4
    d = list(D.features)
    assert isinstance(d[0], nn.Conv2d) and isinstance(d[1], nn.LeakyReLU)  # no BN on D's input layer
    assert all(m.negative_slope == 0.2 for m in d if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d) == 3
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in G.modules() if isinstance(m, nn.BatchNorm2d))
    convs = [m.weight for m in list(G.modules()) + list(D.modules()) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([c.flatten() for c in convs])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3  # N(0, 0.02)
    args = dcgan.parse_args(["--dataset", "mnist"])
    assert (args.lr, args.beta1, args.beta2, args.batch_size, args.latent_dim) == (2e-4, 0.5, 0.999, 128, 100)
