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
    # BatchNorm before G's ReLUs (the deviation the docstring states), with its default eps, and no bias before it
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 2 and all(m.eps == 1e-5 for m in norms) and linear[0].bias is None
    # D as the authors' mnist.yaml: 240 maxout units of 5 pieces, twice; dropout 0.2 on the input, 0.5 after
    maxouts = [m for m in D.modules() if isinstance(m, V.Maxout)]
    assert [(m.linear.in_features, m.units, m.pieces) for m in maxouts] == [(1024, 240, 5), (240, 240, 5)]
    assert [m.p for m in D.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5]
    assert isinstance(D.net[-1], nn.Linear) and D.net[-1].out_features == 1  # a logit: no sigmoid
    assert not [m for m in D.modules() if "Norm" in type(m).__name__]
    args = V.parse_args([])
    assert (args.lr, args.beta1, args.beta2, args.batch_size, args.latent_dim, args.width, args.d_steps) == \
        (2e-4, 0.5, 0.999, 100, 100, 1200, 1)


def test_maxout_is_the_max_of_its_pieces():
    m = V.Maxout(3, units=2, pieces=4)
    x = torch.randn(5, 3)
    pieces = m.linear(x).view(5, 2, 4)  # unit j's pieces are outputs 4j .. 4j + 3 of the linear map
    assert torch.equal(m(x), pieces.max(2).values)
    manual = torch.stack([torch.stack([(x @ m.linear.weight[4 * j + k] + m.linear.bias[4 * j + k])
                                       for k in range(4)], 1).max(1).values for j in range(2)], 1)
    torch.testing.assert_close(m(x), manual)


def test_the_label_is_concatenated_to_both_inputs():
    torch.manual_seed(0)
    G = V.Generator(latent_dim=16, channels=1, image_size=32, n_classes=3, width=32).eval()  # BatchNorm: eval
    D = V.Discriminator(channels=1, image_size=32, n_classes=3, width=32).eval()  # eval: no dropout
    assert G.net[0].in_features == 16 + 3 and D.net[1].linear.in_features == 32 * 32 + 3
    z = torch.randn(1, 16).repeat(3, 1)
    x = G(z, torch.arange(3))
    assert (x[0] - x[1]).abs().max() > 1e-4 and (x[1] - x[2]).abs().max() > 1e-4
    assert len(set(D(x[:1].repeat(3, 1, 1, 1), torch.arange(3)).tolist())) == 3


def test_D_reads_pixels_in_0_1_so_input_dropout_blanks_to_the_background():
    """The paper's pixels are in [0, 1]: a black pixel (-1 in training's range) reaches D's input dropout as 0, which
    dropout leaves unchanged, and a white one as 1. (On [-1, 1], dropout greyed a fifth of each real background.)"""
    D = V.Discriminator(channels=1, image_size=32, width=40).train()
    seen = []
    D.net[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    x = -torch.ones(4, 1, 32, 32)
    x[:, :, 10:20, 10:20] = 1
    D(x)
    assert torch.equal(seen[0], (x.flatten(1) + 1) / 2)
    out = D.net[0](seen[0])  # what dropout passes on: the background stays 0 for every drawn mask
    assert torch.equal(out.view(4, 1, 32, 32)[:, :, :10], torch.zeros(4, 1, 10, 32))
