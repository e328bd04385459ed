"""The speed switches must not change what a run means: figures are read from the device every LOG_EVERY steps (a
NaN still stops the run at its step: test_scripts.py); channels_last changes no result; --amp runs G's and D's
forward passes in bfloat16 and the losses in float32, trains, resumes exactly, keeps the NaN stop and computes
WGAN-GP's penalty (a double backward) close to float32."""

import pytest
import torch

import common
import dcgan
import vanilla_gan
import wgan_gp
from conftest import SCRIPTS, TINY, assert_identical, exploding_at, train, weights

ids = [m.__name__ for m in SCRIPTS]
# each paper's logged figures, from D's outputs on the real and the fake batch
GAN = lambda r, f: {"D(x)": torch.sigmoid(r).mean(), "D(G(z))": torch.sigmoid(f).mean()}  # noqa: E731
WGAN = lambda r, f: {"wasserstein/estimate": r.mean() - f.mean()}  # noqa: E731
FIGURES = {"vanilla_gan": GAN, "dcgan": GAN, "wgan": WGAN, "wgan_gp": WGAN,
           "lsgan": lambda r, f: {"D(x)": r.mean(), "D(G(z))": f.mean()},
           "sngan": lambda r, f: {"score/real": r.mean(), "score/fake": f.mean()}}


def test_logged_figures_are_read_every_LOG_EVERY_steps_not_every_step(data_root, monkeypatch):
    """Reading a CUDA tensor on the host waits for the GPU: the per-step path must not do it. Run.log only stores
    the step's tensors; they are read in one transfer every LOG_EVERY steps, and before each grid and checkpoint."""
    monkeypatch.setattr(common, "LOG_EVERY", 3)
    real_read, real_log, reads, logged = common.Logger.read, common.Logger.log, [], []

    def read(self):
        if self.pending:  # (the step of the last figures read, how many steps were read at once)
            reads.append((self.pending[-1][0], len(self.pending)))
        real_read(self)

    def log(self, step, epoch, stats):
        assert all(torch.is_tensor(v) for v in stats.values() if v is not None)
        logged.append(step)
        real_log(self, step, epoch, stats)
    monkeypatch.setattr(common.Logger, "read", read)
    monkeypatch.setattr(common.Logger, "log", log)
    assert train(dcgan, data_root, "--epochs", "1") == 0
    assert logged == list(range(1, 9))  # 64 images / batch 8
    assert reads == [(3, 3), (6, 3), (8, 2)]


def test_a_nan_stops_the_run_before_a_step_grid(data_root, tmp_path, monkeypatch):
    exploding_at(dcgan, monkeypatch, 2)
    assert train(dcgan, data_root, "--epochs", "1", "--sample-every", "3") == 1
    assert not (tmp_path / "results/dcgan_mnist/step_0000003.png").exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_channels_last_changes_no_output(script, data_root, monkeypatch):
    """The convolutional scripts put G and D in channels_last (NHWC), and Run's batches come in it: the same
    outputs as contiguous tensors, in training mode (BatchNorm's batch statistics) and in eval mode."""
    built = []  # G and D as main() hands them to Run, after its memory-format line
    monkeypatch.setattr(common, "Run", lambda args, data, G, D, *a: built.extend([G, D, args]) or stop())
    with pytest.raises(StopIteration):
        script.main(["--dataset", "mnist", "--data-root", str(data_root), *TINY[:4], "--device", "cpu"])
    G, D, args = built
    conv = script is not vanilla_gan  # the MLP GAN has no 4-d weights
    assert all(p.is_contiguous(memory_format=torch.channels_last) for m in (G, D) for p in m.parameters()
               if p.dim() == 4) and any(p.dim() == 4 for p in G.parameters()) == conv
    start = [{k: v.clone() for k, v in m.state_dict().items()} for m in (G, D)]
    z, x = torch.randn(4, args.latent_dim), torch.rand(4, 1, 32, 32) * 2 - 1
    outputs = []
    for layout in (torch.channels_last, torch.contiguous_format):
        G.load_state_dict(start[0]), D.load_state_dict(start[1])  # the train-mode pass moved BatchNorm's statistics
        G.to(memory_format=layout), D.to(memory_format=layout)
        for training in (True, False):
            G.train(training), D.train(training)
            torch.manual_seed(1)  # the same dropout masks (the MLP GAN's D) in both layouts
            with torch.no_grad():
                outputs.append((G(z), D(x.contiguous(memory_format=layout))))
    for a, b in zip(outputs[:2], outputs[2:]):
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def stop():
    raise StopIteration


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_amp_runs_the_forward_passes_in_bfloat16_and_the_losses_in_float32(script):
    torch.manual_seed(0)
    G = script.Generator(latent_dim=8, channels=1, image_size=32, width=8)
    D = script.Discriminator(channels=1, image_size=32, width=8)
    seen = []
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    outputs = []  # D's outputs, in call order: real, fake, (the penalty's interpolates,) fake in G's step
    D.register_forward_hook(lambda mod, inp, out: outputs.append(out.detach()))
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0.01), torch.optim.SGD(D.parameters(), lr=0.01)
    args = script.parse_args(["--latent-dim", "8", "--amp"])
    stats = script.train_step(G, D, opt_G, opt_D, torch.rand(8, 1, 32, 32) * 2 - 1, None, args, True)
    assert seen and set(seen) == {torch.bfloat16}  # every layer that multiplies ran in bfloat16...
    assert all(v.dtype == torch.float32 for v in stats.values())  # ...and every loss and figure is float32,
    d_real, d_fake = (o.float() for o in outputs[:2])  # computed in float32 from D's bfloat16 outputs, exactly
    for name, value in FIGURES[script.__name__](d_real, d_fake).items():
        assert stats[name] == value, name
    assert all(p.dtype == torch.float32 for p in list(G.parameters()) + list(D.parameters()))
    assert not torch.is_autocast_enabled("cpu")  # nothing outside train_step runs under autocast
    seen.clear()
    script.train_step(G, D, opt_G, opt_D, torch.rand(8, 1, 32, 32) * 2 - 1, None, script.parse_args(
        ["--latent-dim", "8"]), True)
    assert set(seen) == {torch.float32}  # without --amp: float32 throughout


def test_amp_trains_and_resumes_exactly(data_root, tmp_path):
    """Under autocast too, WGAN-GP's penalty (a double backward) included; every script's bfloat16 forward passes are
    checked above, and every script's exact resume without --amp in test_scripts.py."""
    script = wgan_gp
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
    D = wgan_gp.Discriminator(channels=1, image_size=32, width=16)
    real, fake = torch.rand(16, 1, 32, 32) * 2 - 1, torch.rand(16, 1, 32, 32) * 2 - 1
    values, grads = [], []
    for amp in (torch.autocast("cpu", enabled=False), torch.autocast("cpu", dtype=torch.bfloat16)):
        torch.manual_seed(1)  # the same interpolation eps
        gp = wgan_gp.gradient_penalty(D, real, fake, None, amp)
        D.zero_grad()
        gp.backward()
        values.append(gp)
        grads.append(torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                                for p in D.parameters()]))  # biases get none: D's input gradient ignores them
    assert values[1].dtype == torch.float32 and torch.isfinite(values[1]) and values[1] != values[0]
    torch.testing.assert_close(values[1], values[0], rtol=0.05, atol=0)
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.99 and (grads[1].norm() / grads[0].norm() - 1).abs() < 0.05


def test_amp_is_refused_on_mps_in_one_line():
    args = dcgan.parse_args(["--amp"])
    data = common.Data("x", 1, 32, 28, "pad", [], torch.zeros(8, dtype=torch.long),
                       images=torch.zeros(8, 1, 32, 32, dtype=torch.uint8))
    G, D = dcgan.Generator(latent_dim=100, channels=1, image_size=32), dcgan.Discriminator(channels=1, image_size=32)
    with pytest.raises(common.UserError, match="--amp.*MPS"):
        common.Run(args, data, G, D, None, None, {}, torch.device("mps"), None)


@pytest.mark.parametrize("flags", ["fpu avx2 fma", "fpu avx512f avx512_bf16", None])
def test_amp_warns_only_on_a_cpu_that_emulates_bfloat16(flags, monkeypatch, capsys):
    monkeypatch.setattr(common, "_cpuinfo", lambda field: flags)
    common.check_run(dcgan.parse_args(["--amp"]), torch.device("cpu"), 1, 1000)
    common.check_run(dcgan.parse_args([]), torch.device("cpu"), 1, 1000)
    err = capsys.readouterr().err
    assert ("no native bfloat16" in err) == (flags == "fpu avx2 fma") and err.count("\n") <= 1
