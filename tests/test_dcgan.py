"""dcgan.py: the networks as the paper builds them, one training step, a full run's outputs, exact resume."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

import common
import dcgan
from conftest import ROOT, TINY, call


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


def test_labels_reach_G_and_D():
    torch.manual_seed(0)
    G = dcgan.Generator(latent_dim=16, channels=1, image_size=32, n_classes=3, width=8).eval()
    D = dcgan.Discriminator(channels=1, image_size=32, n_classes=3, width=8).eval()
    z = torch.randn(1, 16).repeat(3, 1)
    x = G(z, torch.arange(3))
    assert (x[0] - x[1]).abs().max() > 1e-4 and (x[1] - x[2]).abs().max() > 1e-4
    xs = x[:1].repeat(3, 1, 1, 1)
    logits = D(xs, torch.arange(3))
    assert len(set(logits.tolist())) == 3


def test_train_step_moves_D_of_G_the_right_way():
    torch.manual_seed(0)
    G = dcgan.Generator(latent_dim=8, channels=1, image_size=32, width=8)
    D = dcgan.Discriminator(channels=1, image_size=32, width=8)
    args = dcgan.parse_args(["--latent-dim", "8"])
    opt_G = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    real = torch.rand(16, 1, 32, 32) * 2 - 1
    g_params = [p.clone() for p in G.parameters()]
    before = dcgan.train_step(G, D, opt_G, opt_D, real, None, args)
    assert set(before) == {"loss/d", "loss/g", "D(x)", "D(G(z))"}
    assert any(not torch.equal(a, b) for a, b in zip(g_params, G.parameters()))
    # G's update alone must raise D(G(z)) on the same z (non-saturating loss, target "real")
    z = torch.randn(16, 8)
    with torch.no_grad():
        d_before = torch.sigmoid(D(G(z))).mean()
    for _ in range(3):
        g_loss = nn.functional.binary_cross_entropy_with_logits(D(G(z)), torch.ones(16))
        opt_G.zero_grad()
        g_loss.backward()
        opt_G.step()
    with torch.no_grad():
        assert torch.sigmoid(D(G(z))).mean() > d_before


def run_dcgan(data_root, *extra):
    return call(dcgan.main, ["--dataset", "mnist", "--data-root", str(data_root), *TINY, *extra])


def test_run_outputs(data_root, tmp_path):
    assert run_dcgan(data_root, "--epochs", "2", "--sample-every", "5") == 0
    models, results = tmp_path / "models" / "dcgan_mnist", tmp_path / "results" / "dcgan_mnist"
    assert sorted(p.name for p in models.iterdir()) == ["epoch_001.pt", "epoch_002.pt", "last.pt"]
    for f in ["epoch_001.png", "epoch_002.png", "progress.gif", "losses.csv", "losses.png", "step_0000005.png"]:
        assert (results / f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(results / "losses.csv")))
    assert len(rows) == 16 and rows[-1]["step"] == "16" and rows[-1]["epoch"] == "2"  # 64 images / 8 = 8 a epoch
    from PIL import Image
    assert Image.open(results / "progress.gif").n_frames == 2
    ck = torch.load(models / "last.pt", weights_only=True)  # plain data only
    for key in ["format", "version", "arch", "args", "model_args", "epoch", "step", "G", "D", "opt_G", "opt_D",
                "fixed_z", "fixed_labels", "rng", "classes", "image_shape", "data", "train_seconds", "device",
                "torch_version"]:
        assert key in ck, key
    assert (ck["arch"], ck["epoch"], ck["step"], ck["image_shape"]) == ("dcgan", 2, 16, [1, 32, 32])
    assert ck["data"] == {"dataset": "mnist", "native_size": 28, "mapping": "pad", "source": ck["data"]["source"]}
    assert ck["args"]["lr"] == 2e-4 and ck["classes"][:2] == ["0", "1"]
    assert ck["device"].startswith("cpu: ") and 0 < ck["train_seconds"] < 600


def test_conditional_run_name_and_grid(data_root, tmp_path):
    assert run_dcgan(data_root, "--conditional", "--max-steps", "3") == 0
    ck = torch.load(tmp_path / "models" / "dcgan_mnist_cond" / "last.pt", weights_only=True)
    assert ck["model_args"]["n_classes"] == 10 and ck["fixed_labels"].tolist()[:11] == [0] * 10 + [1]
    assert (tmp_path / "results" / "dcgan_mnist_cond" / "step_0000003.png").exists()


def weights(path):
    ck = torch.load(path, weights_only=True)
    return ck["G"], ck["D"], ck["opt_G"]["state"], ck["opt_D"]["state"]


def assert_identical(a, b):
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            va, vb = sa[k], sb[k]
            if isinstance(va, dict):
                assert all(torch.equal(va[j], vb[j]) for j in va), k
            else:
                assert torch.equal(va, vb), k


@pytest.mark.parametrize("conditional", [False, True])
def test_exact_resume(data_root, tmp_path, conditional):
    """2 epochs straight == 1 epoch, then --resume for the 2nd: bit-identical weights and optimizer states."""
    cond = ["--conditional"] if conditional else []
    assert run_dcgan(data_root, "--epochs", "2", "--name", "straight", *cond) == 0
    assert run_dcgan(data_root, "--epochs", "1", "--name", "split", *cond) == 0
    assert run_dcgan(data_root, "--epochs", "2", "--name", "split", "--resume", *cond) == 0
    assert_identical(weights(tmp_path / "models/straight/last.pt"), weights(tmp_path / "models/split/last.pt"))
    assert_identical(weights(tmp_path / "models/straight/epoch_001.pt"), weights(tmp_path / "models/split/epoch_001.pt"))


def test_resume_inside_an_epoch(data_root, tmp_path):
    assert run_dcgan(data_root, "--epochs", "2", "--name", "straight") == 0
    assert run_dcgan(data_root, "--epochs", "2", "--name", "split", "--max-steps", "11") == 0
    part = torch.load(tmp_path / "models/split/last.pt", weights_only=True)
    assert part["step"] == 11
    assert run_dcgan(data_root, "--epochs", "2", "--name", "split", "--resume") == 0
    # the wall time the results table reports is summed over the parts of a resumed run
    assert torch.load(tmp_path / "models/split/last.pt", weights_only=True)["train_seconds"] > part["train_seconds"]
    assert_identical(weights(tmp_path / "models/straight/last.pt"), weights(tmp_path / "models/split/last.pt"))
    rows = list(csv.DictReader(open(tmp_path / "results/split/losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17))


def test_resume_from_a_given_checkpoint_takes_its_settings(data_root, tmp_path):
    assert run_dcgan(data_root, "--epochs", "1", "--latent-dim", "12") == 0
    ck = tmp_path / "models/dcgan_mnist/epoch_001.pt"
    # other flags on the command line (--latent-dim) do not change the run: its settings come from the checkpoint
    assert run_dcgan(data_root, "--epochs", "2", "--resume", str(ck)) == 0
    assert torch.load(tmp_path / "models/dcgan_mnist/last.pt", weights_only=True)["model_args"]["latent_dim"] == 12


def test_a_smoke_run_names_only_what_it_wrote(data_root, tmp_path, capsys):
    assert run_dcgan(data_root, "--max-steps", "2") == 0  # stops inside epoch 1: no epoch grid, no GIF yet
    out = capsys.readouterr().out
    assert "step_0000002.png" in out and "progress.gif" not in out
    assert (tmp_path / "results/dcgan_mnist/losses.png").exists() and "losses.png" in out


def test_refuses_to_overwrite_a_run(data_root, tmp_path, capsys):
    assert run_dcgan(data_root, "--max-steps", "2") == 0
    before = (tmp_path / "models/dcgan_mnist/last.pt").read_bytes()
    capsys.readouterr()
    assert run_dcgan(data_root, "--max-steps", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "already holds checkpoints" in err[0]
    assert (tmp_path / "models/dcgan_mnist/last.pt").read_bytes() == before


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(data_root, tmp_path, capsys, monkeypatch):
    assert run_dcgan(data_root, "--epochs", "1") == 0
    good = (tmp_path / "models/dcgan_mnist/last.pt").read_bytes()
    real_step = dcgan.train_step
    calls = []

    def exploding(*a, **k):
        calls.append(1)
        stats = real_step(*a, **k)
        return {**stats, "loss/g": torch.tensor(float("nan"))} if len(calls) == 3 else stats

    monkeypatch.setattr(dcgan, "train_step", exploding)
    capsys.readouterr()
    assert run_dcgan(data_root, "--epochs", "2", "--resume") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "loss/g is nan at step 11" in err and "last good checkpoint" in err
    assert (tmp_path / "models/dcgan_mnist/last.pt").read_bytes() == good
    assert not (tmp_path / "models/dcgan_mnist/epoch_002.pt").exists()


def test_kill_9_leaves_a_resumable_checkpoint(data_root, tmp_path):
    """A real process killed with SIGKILL while it trains and saves: last.pt still loads and --resume goes on."""
    cmd = [sys.executable, str(ROOT / "dcgan.py"), "--dataset", "mnist", "--data-root", str(data_root), *TINY,
           "--epochs", "1000"]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = tmp_path / "models/dcgan_mnist"
    deadline = time.time() + 60
    while not (models / "epoch_003.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    ck = common.load_checkpoint(models / "last.pt")
    assert ck["epoch"] >= 2  # epoch_003.pt is written before last.pt: the kill may land between the two
    assert call(dcgan.main, ["--data-root", str(data_root), *TINY, "--epochs", str(ck["epoch"] + 1), "--resume"]) == 0
    assert torch.load(models / "last.pt", weights_only=True)["epoch"] == ck["epoch"] + 1


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    common.atomic_save({"a": 1}, path)

    def crash(tmp):
        open(tmp, "wb").write(b"half a checkpoi")
        raise OSError("disk full")

    with pytest.raises(OSError):
        common.atomic_write(path, crash)
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_tensorboard(data_root, tmp_path):
    pytest.importorskip("tensorboard")
    assert run_dcgan(data_root, "--max-steps", "2", "--tensorboard") == 0
    assert list((tmp_path / "runs" / "dcgan_mnist").glob("events.out.tfevents.*"))


def test_tensorboard_missing_is_one_line(data_root, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    assert run_dcgan(data_root, "--max-steps", "2", "--tensorboard") == 2
    assert "pip install tensorboard" in capsys.readouterr().err


def test_command_line_help():
    out = subprocess.run([sys.executable, str(ROOT / "dcgan.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ["--dataset", "--data-root", "--image-size", "--epochs", "--max-steps", "--batch-size", "--lr",
                 "--latent-dim", "--conditional", "--seed", "--device", "--out", "--name", "--resume",
                 "--sample-every", "--tensorboard", "--workers", "(default: 0.0002)"]:
        assert flag in out.stdout, flag


def test_seed_fixes_the_run(data_root, tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert run_dcgan(data_root, "--max-steps", "2", "--name", name, "--seed", seed) == 0
    a, b, c = (torch.load(tmp_path / f"models/{n}/last.pt", weights_only=True)["G"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
