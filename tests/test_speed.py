"""The speed switches must not change what a run means: figures read from the device every LOG_EVERY steps still stop
a run at the exact step a NaN appeared; channels_last changes no result; --amp (bfloat16 autocast) trains, resumes
exactly, keeps the NaN stop and computes WGAN-GP's penalty (a double backward) close to float32."""
import csv

import pytest
import torch

import common
import dcgan
import vanilla_gan
import wgan
import wgan_gp
from conftest import assert_identical, exploding_at, train, weights

SCRIPTS = [vanilla_gan, dcgan, wgan, wgan_gp]
ids = [m.__name__ for m in SCRIPTS]


def test_logged_figures_are_read_every_LOG_EVERY_steps_not_every_step(data_root, monkeypatch):
    """Reading a CUDA tensor on the host waits for the GPU: the per-step path must not do it. Run.log only stores
    the step's tensors; they are read in one transfer every LOG_EVERY steps, and before each grid and checkpoint."""
    monkeypatch.setattr(common, "LOG_EVERY", 3)
    real_read, reads, logged = common.Run._read, [], []

    def read(self):
        reads.append((self.step, len(self.pending)))
        real_read(self)

    def log(self, stats):
        assert all(torch.is_tensor(v) for v in stats.values() if v is not None)
        logged.append(self.step)
        real_log(self, stats)
    real_log = common.Run.log
    monkeypatch.setattr(common.Run, "_read", read)
    monkeypatch.setattr(common.Run, "log", log)
    assert train(dcgan, data_root, "--epochs", "1") == 0
    assert len(logged) == 8  # 64 images / batch 8
    per_step = [r for r in reads if r[1]]  # the reads that had figures to read
    assert [s for s, _ in per_step] == [3, 6, 8] and [n for _, n in per_step] == [3, 3, 2]


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_a_nan_found_after_the_fact_names_its_step(script, data_root, tmp_path, capsys, monkeypatch):
    """LOG_EVERY = 4: a NaN at step 6 is read at step 8 and still reported as step 6; losses.csv keeps steps 1-5,
    and no checkpoint or grid is written from the diverged weights."""
    monkeypatch.setattr(common, "LOG_EVERY", 4)
    exploding_at(script, monkeypatch, 6)
    assert train(script, data_root, "--epochs", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "loss/d is nan at step 6 (epoch 1)" in err[-1]
    rows = list(csv.DictReader(open(tmp_path / f"results/{script.__name__}_mnist/losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert not (tmp_path / f"models/{script.__name__}_mnist").exists()
    assert not (tmp_path / f"results/{script.__name__}_mnist/epoch_001.png").exists()


def test_a_nan_stops_the_run_before_a_step_grid(data_root, tmp_path, monkeypatch):
    exploding_at(dcgan, monkeypatch, 2)
    assert train(dcgan, data_root, "--epochs", "1", "--sample-every", "3") == 1
    assert not (tmp_path / "results/dcgan_mnist/step_0000003.png").exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_speed_up_keeps_the_models_and_their_results(script):
    """channels_last where there are convolutions, nothing for the MLP; the same weights give the same outputs."""
    torch.manual_seed(0)
    G, D = script.Generator(latent_dim=8, channels=1, image_size=32, width=8), \
        script.Discriminator(channels=1, image_size=32, width=8)
    G.eval(), D.eval()
    z, x = torch.randn(4, 8), torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        before = G(z), D(x)
    args = script.parse_args([])
    layout = common.speed_up(G, args, torch.device("cpu"))
    common.speed_up(D, args, torch.device("cpu"))
    conv = script is not vanilla_gan
    assert layout == (torch.channels_last if conv else torch.contiguous_format)
    with torch.no_grad():
        after = G(z), D(x.contiguous(memory_format=layout))
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert list(G.state_dict()) == list(script.Generator(latent_dim=8, channels=1, image_size=32, width=8).state_dict())


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_fast_dropout_is_dropout(p):
    """The mask drawn as uniform >= p: units kept with probability 1 - p and scaled by 1/(1 - p), gradients through
    the kept units only, the same mask for the same seed, bfloat16 in and out under --amp, the identity in eval."""
    m = torch.nn.Dropout(p)
    m.forward = common.fast_dropout(m)
    x = torch.ones(200, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = m(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 200k draws: the standard error is 0.001
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / (1 - p))
    torch.manual_seed(0)
    assert torch.equal(m(x), y)
    h = torch.ones(4, 1000, dtype=torch.bfloat16)
    assert m(h).dtype == torch.bfloat16 and set(m(h).unique().tolist()) <= {0.0, 1 / (1 - p)}
    m.eval()
    assert m(x) is x


def test_speed_up_gives_the_mlp_gans_dropout_the_fast_mask_on_the_cpu_only():
    args = vanilla_gan.parse_args([])
    D = vanilla_gan.Discriminator(channels=1, image_size=32)
    common.speed_up(D, args, torch.device("cpu"))
    dropouts = [m for m in D.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 3 and all("forward" in vars(m) for m in dropouts)
    D = vanilla_gan.Discriminator(channels=1, image_size=32)
    common.speed_up(D, args, torch.device("meta"))  # a GPU keeps F.dropout: its bernoulli_ is one fast kernel
    assert not any("forward" in vars(m) for m in D.modules() if isinstance(m, torch.nn.Dropout))


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_amp_computes_in_bfloat16_and_returns_float32(script):
    torch.manual_seed(0)
    G = script.Generator(latent_dim=8, channels=1, image_size=32, width=8).eval()
    z = torch.randn(4, 8)
    with torch.no_grad():
        ref = G(z)
    common.speed_up(G, script.parse_args(["--amp"]), torch.device("cpu"))
    with torch.no_grad():
        out = G(z)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)  # computed in bfloat16...
    torch.testing.assert_close(out, ref, rtol=0, atol=0.05)  # ...to bfloat16's precision


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_amp_trains_and_resumes_exactly(script, data_root, tmp_path):
    assert train(script, data_root, "--epochs", "2", "--name", "straight", "--amp") == 0
    assert train(script, data_root, "--epochs", "2", "--name", "split", "--amp", "--max-steps", "11") == 0
    assert train(script, data_root, "--epochs", "2", "--name", "split", "--resume") == 0  # --amp from the checkpoint
    a, b = (tmp_path / f"models/{n}/last.pt" for n in ("straight", "split"))
    assert all(torch.load(p, weights_only=True)["args"]["amp"] is True for p in (a, b))
    assert_identical(weights(a), weights(b))
    assert all(torch.isfinite(v).all() for sd in weights(a)[:2] for v in sd.values())


def test_amp_keeps_the_nan_stop(data_root, capsys, monkeypatch):
    exploding_at(wgan_gp, monkeypatch, 3)
    assert train(wgan_gp, data_root, "--epochs", "1", "--amp") == 1
    assert "loss/d is nan at step 3" in capsys.readouterr().err


def test_amp_gradient_penalty_is_close_to_float32():
    """The penalty differentiates D's bfloat16 forward twice (autograd.grad with create_graph, then backward): its
    value, and the gradient it sends to D's weights, must stay close to the float32 ones."""
    torch.manual_seed(0)
    D32 = wgan_gp.Discriminator(channels=1, image_size=32, width=16)
    D16 = wgan_gp.Discriminator(channels=1, image_size=32, width=16)
    D16.load_state_dict(D32.state_dict())
    common.speed_up(D16, wgan_gp.parse_args(["--amp"]), torch.device("cpu"))
    real, fake = torch.rand(16, 1, 32, 32) * 2 - 1, torch.rand(16, 1, 32, 32) * 2 - 1
    values, grads = [], []
    for D in (D32, D16):
        torch.manual_seed(1)  # the same interpolation eps
        gp = wgan_gp.gradient_penalty(D, real, fake, None)
        D.zero_grad()
        gp.backward()
        values.append(gp)
        grads.append(torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                                for p in D.parameters()]))  # biases get none: D's input gradient ignores them
    assert values[1].dtype == torch.float32 and torch.isfinite(values[1])
    torch.testing.assert_close(values[1], values[0], rtol=0.05, atol=0)
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.99 and (grads[1].norm() / grads[0].norm() - 1).abs() < 0.05


def test_amp_is_refused_on_mps_in_one_line(monkeypatch):
    args = dcgan.parse_args(["--amp"])
    data = common.Data("x", 1, 32, 28, "pad", [], torch.zeros(8, dtype=torch.long),
                       images=torch.zeros(8, 1, 32, 32, dtype=torch.uint8))
    G, D = dcgan.Generator(latent_dim=100, channels=1, image_size=32), dcgan.Discriminator(channels=1, image_size=32)
    with pytest.raises(common.UserError, match="--amp.*MPS"):
        common.Run(args, data, G, D, None, None, {}, torch.device("mps"))
