"""lsgan.py: the least-squares losses against hand-computed values for both codings, D's linear output, the defaults
(the shared contract is in test_scripts.py)."""
import pytest
import torch
import torch.nn as nn

import lsgan


class Mean(nn.Module):
    """D(x) = the mean of x over C, H, W: with images of known means, D's outputs are known."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, y=None):
        return self.w * x.flatten(1).mean(1)


class Fixed(nn.Module):
    """G(z) = the same images, whatever z: the fake batch is known."""

    def __init__(self, images):
        super().__init__()
        self.images = nn.Parameter(images)

    def forward(self, z, y=None):
        return self.images[:len(z)]


def images(means):
    return torch.tensor(means).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()


@pytest.mark.parametrize("coding", [(0.0, 1.0, 1.0), (-1.0, 1.0, 0.0)], ids=["0-1", "pearson"])
def test_the_least_squares_losses_against_hand_computed_values(coding):
    a, b, c = coding
    r, f = [0.9, 0.2, -0.4], [0.1, -0.7, 0.5]  # D(x) and D(G(z)) on the step's batches
    G, D = Fixed(images(f)), Mean()
    args = lsgan.parse_args(["--latent-dim", "8", "--coding", *map(str, coding)])
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0), torch.optim.SGD(D.parameters(), lr=0)  # D unchanged
    stats = lsgan.train_step(G, D, opt_G, opt_D, images(r), None, args, True)
    d_loss = 0.5 * sum((x - b) ** 2 for x in r) / 3 + 0.5 * sum((x - a) ** 2 for x in f) / 3
    g_loss = 0.5 * sum((x - c) ** 2 for x in f) / 3
    assert stats["loss/d"].item() == pytest.approx(d_loss, rel=1e-6)
    assert stats["loss/g"].item() == pytest.approx(g_loss, rel=1e-6)
    assert stats["D(x)"].item() == pytest.approx(sum(r) / 3) and stats["D(G(z))"].item() == pytest.approx(sum(f) / 3)
    # G's gradient: d/dG(z) of 1/2 mean((D(G(z)) - c)^2) = (f_i - c) / 3 spread over the 16 pixels of image i
    expected = torch.tensor([(x - c) / 3 / 16 for x in f]).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    torch.testing.assert_close(G.images.grad, expected)


def test_D_is_a_regressor_and_the_defaults_are_the_authors():
    D = lsgan.Discriminator(channels=1, image_size=32, width=8)
    assert not [m for m in D.modules() if isinstance(m, (nn.Sigmoid, nn.Tanh))]
    with torch.no_grad():
        D.out.weight.mul_(1000)
        assert (D(torch.rand(8, 1, 32, 32) * 2 - 1).abs() > 1).any()  # unbounded: a regression, not a probability
    args = lsgan.parse_args([])
    assert (args.coding, args.lr, args.beta1, args.beta2, args.batch_size, args.d_steps) == \
        ([0.0, 1.0, 1.0], 2e-4, 0.5, 0.999, 64, 1)
