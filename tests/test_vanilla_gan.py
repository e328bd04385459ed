"""vanilla_gan.py: MLPs on flattened images, as the paper builds them (the shared contract is in test_scripts.py)."""
import pytest
import torch
import torch.nn as nn

import vanilla_gan as V


@pytest.mark.parametrize("channels, size", [(1, 32), (3, 32), (3, 64)])
@pytest.mark.parametrize("n_classes", [0, 10])
def test_shapes(channels, size, n_classes):
    G = V.Generator(latent_dim=100, channels=channels, image_size=size, n_classes=n_classes, width=64)
    D = V.Discriminator(channels=channels, image_size=size, n_classes=n_classes, width=64)
    z, y = torch.randn(5, 100), torch.arange(5)
    x = G(z, y if n_classes else None)
    assert x.shape == (5, channels, size, size) and x.abs().max() <= 1  # Tanh output
    assert D(x, y if n_classes else None).shape == (5,)


def test_paper_architecture_and_defaults():
    G = V.Generator(latent_dim=100, channels=1, image_size=32)
    D = V.Discriminator(channels=1, image_size=32)
    linear = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(100, 1200), (1200, 1200), (1200, 1024)]
    assert sum(isinstance(m, nn.ReLU) for m in G.modules()) == 2 and isinstance(G.net[-1], nn.Tanh)
    # D: dropout 0.2 on the input and 0.5 on the hidden units (the authors' mnist.yaml), LeakyReLU(0.2), no sigmoid
    assert [m.p for m in D.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5]
    assert [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2]
    assert isinstance(D.net[-1], nn.Linear) and D.net[-1].out_features == 1
    # no normalisation layer anywhere (BatchNorm came after the paper): nothing with a surprising positional eps
    assert not [m for m in list(G.modules()) + list(D.modules()) if "Norm" in type(m).__name__]
    args = V.parse_args([])
    assert (args.lr, args.beta1, args.beta2, args.batch_size, args.latent_dim, args.width) == \
        (2e-4, 0.5, 0.999, 100, 100, 1200)


def test_the_label_is_concatenated_to_both_inputs():
    torch.manual_seed(0)
    G = V.Generator(latent_dim=16, channels=1, image_size=32, n_classes=3, width=32)
    D = V.Discriminator(channels=1, image_size=32, n_classes=3, width=32).eval()  # eval: no dropout
    assert G.net[0].in_features == 16 + 3 and D.net[1].in_features == 32 * 32 + 3
    z = torch.randn(1, 16).repeat(3, 1)
    x = G(z, torch.arange(3))
    assert (x[0] - x[1]).abs().max() > 1e-4 and (x[1] - x[2]).abs().max() > 1e-4
    assert len(set(D(x[:1].repeat(3, 1, 1, 1), torch.arange(3)).tolist())) == 3
