"""wgan.py: the critic, weight clipping and n_critic (the shared contract is in test_scripts.py)."""
import pytest
import torch
import torch.nn as nn

import wgan
from conftest import TINY, call


def models(n_classes=0):
    torch.manual_seed(0)
    G = wgan.Generator(latent_dim=8, channels=1, image_size=32, n_classes=n_classes, width=8)
    D = wgan.Discriminator(channels=1, image_size=32, n_classes=n_classes, width=8)
    return G, D, wgan.parse_args(["--latent-dim", "8"])


def test_the_critic_is_unbounded_and_the_defaults_are_algorithm_1s():
    G, D, _ = models()
    assert not [m for m in D.modules() if isinstance(m, (nn.Sigmoid, nn.Tanh))]
    with torch.no_grad():
        D.out.weight.mul_(1000)
    s = D(torch.rand(8, 1, 32, 32) * 2 - 1)
    assert s.shape == (8,) and (s.abs() > 1).any()  # a score, not a probability
    args = wgan.parse_args([])
    assert (args.lr, args.clip, args.d_steps, args.batch_size, args.latent_dim) == (5e-5, 0.01, 5, 64, 100)


@pytest.mark.parametrize("n_classes", [0, 3])
def test_after_a_critic_step_every_critic_weight_is_clipped_and_G_is_untouched(n_classes):
    G, D, args = models(n_classes)
    assert max(p.abs().max() for p in D.parameters()) > 0.5  # BatchNorm scales start near 1: well outside c
    opt_G, opt_D = torch.optim.RMSprop(G.parameters(), lr=5e-5), torch.optim.RMSprop(D.parameters(), lr=5e-5)
    g_before = [p.clone() for p in G.parameters()]
    labels = torch.arange(16) % 3 if n_classes else None
    stats = wgan.train_step(G, D, opt_G, opt_D, torch.rand(16, 1, 32, 32) * 2 - 1, labels, args, update_G=False)
    assert all(p.abs().max() <= args.clip for p in D.parameters())  # conv, BatchNorm, output, class embedding
    assert all(torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert all(p.grad is None for p in G.parameters())  # not even a gradient: no graph through G was kept
    assert stats["loss/g"] is None and stats["wasserstein/estimate"] == pytest.approx(-stats["loss/d"].item())


def test_G_updates_on_every_n_critic_th_batch_across_epochs(data_root, tmp_path, monkeypatch):
    calls = []
    real_step = wgan.train_step
    monkeypatch.setattr(wgan, "train_step", lambda *a: calls.append(a[-1]) or real_step(*a))
    # 8 batches an epoch, n_critic 3: the cycle runs on over the epoch's end
    assert call(wgan.main, ["--data-root", str(data_root), *TINY, "--epochs", "2", "--d-steps", "3"]) == 0
    assert [i + 1 for i, u in enumerate(calls) if u] == [3, 6, 9, 12, 15]
    ck = torch.load(tmp_path / "models/wgan_mnist/last.pt", weights_only=True)
    assert "alpha" in ck["opt_D"]["param_groups"][0] and ck["opt_D"]["param_groups"][0]["lr"] == 5e-5  # RMSprop
