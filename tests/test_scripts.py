"""The contract every training script keeps (vanilla_gan, dcgan, wgan, wgan_gp, lsgan, sngan): its steps move D and G
the right way, the label and the flags reach the networks, outputs, checkpoint format, exact resume (inside an epoch
too, which for the WGANs is inside an n_critic cycle), refusal of an existing run or a changed flag, the NaN and inf
stop, --help, the seed. Most tests run once per script."""
import copy
import csv
import os

import pytest
import torch
import torch.nn.functional as F

import common
import dcgan
import vanilla_gan
import wgan
import wgan_gp
from conftest import SCRIPTS, TINY, assert_identical, call, exploding_at, train, weights

ids = [m.__name__ for m in SCRIPTS]
# what each script logs every step, beside its losses: what its paper plotted (D's outputs, the estimate)
FIGURES = {"vanilla_gan": ["D(x)", "D(G(z))"], "dcgan": ["D(x)", "D(G(z))"], "wgan": ["wasserstein_estimate"],
           "wgan_gp": ["loss_gp", "wasserstein_estimate"], "lsgan": ["D(x)", "D(G(z))"],
           "sngan": ["score_real", "score_fake"]}


def tiny_models(script, conditional=False, seed=0):
    torch.manual_seed(seed)
    n = 3 if conditional else 0
    G = script.Generator(latent_dim=8, channels=1, image_size=32, n_classes=n, width=8)
    D = script.Discriminator(channels=1, image_size=32, n_classes=n, width=8)
    if script is wgan:  # start from weights already clipped, so the step's own clipping is the only one
        with torch.no_grad():
            for p in D.parameters():
                p.clamp_(-0.01, 0.01)
    real = torch.rand(16, 1, 32, 32) * 2 - 1
    labels = torch.arange(16) % 3 if conditional else None
    return G, D, real, labels, script.parse_args(["--latent-dim", "8"])


def step(script, G, D, opt_G, opt_D, real, labels, args, seed, update_G=True):
    """The script's train_step, with the RNG at a known state: its z is torch.randn(B, 8) after manual_seed(seed)."""
    torch.manual_seed(seed)
    return script.train_step(G, D, opt_G, opt_D, real, labels, args, update_G)


def outputs(D, x, labels, seed=5):
    """D's outputs (B,) on x (logits or critic scores), without a gradient; dropout masks fixed by the seed."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return D(x, labels)


def bce(r, f):
    return F.softplus(-r).mean() + F.softplus(f).mean()  # -log D(x) - log(1 - D(G(z))), D = sigmoid(logit)


# each paper's D loss on D's outputs (B,) for real and fake images, restated here from the papers rather than taken
# from the scripts, so that a script whose D loss has the wrong sign, even as a whole, fails
D_LOSS = {
    "vanilla_gan": bce,
    "dcgan": bce,
    "wgan": lambda r, f: f.mean() - r.mean(),  # -(E[D(x)] - E[D(G(z))])
    "wgan_gp": lambda r, f: f.mean() - r.mean(),  # the penalty's weight is set to 0 below (its own tests: test_wgan_gp)
    "lsgan": lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),  # the 0-1 coding, (a, b) = (0, 1)
    "sngan": lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),  # the hinge loss
}


@pytest.mark.parametrize("conditional", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_the_discriminator_step_lowers_the_papers_D_loss(script, conditional):
    """D's update alone (G's optimizer has lr 0) lowers the paper's D loss on the step's own real batch and fakes
    (the same z; D's dropout masks fixed): a sign error in D's loss, in one term or in all, raises it."""
    G, D, real, labels, args = tiny_models(script, conditional)
    args.gp_weight = 0.0
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0), torch.optim.SGD(D.parameters(), lr=1e-3)
    torch.manual_seed(1)
    with torch.no_grad():
        fake = G(torch.randn(16, 8), labels)  # the step's z

    def loss():
        return D_LOSS[script.__name__](outputs(D, real, labels), outputs(D, fake, labels)).item()
    before = loss()
    step(script, G, D, opt_G, opt_D, real, labels, args, seed=1)
    assert loss() < before


@pytest.mark.parametrize("conditional", [False, True], ids=["uncond", "cond"])
@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_the_generator_step_raises_D_of_G_z(script, conditional):
    """G's update alone (D's optimizer has lr 0) raises D(G(z)) on the step's own z, judged by the D of that update
    (its state frozen, so that BatchNorm's running statistics and spectral normalisation's power iteration are the
    same for G's old and new samples): the non-saturating loss for the GANs, the critic's score for the WGANs, the
    target c for LSGAN. A sign error in G's loss lowers it."""
    G, D, real, labels, args = tiny_models(script, conditional)
    G0 = copy.deepcopy(G)
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0.01), torch.optim.SGD(D.parameters(), lr=0)
    step(script, G, D, opt_G, opt_D, real, labels, args, seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(G0.parameters(), G.parameters()))
    torch.manual_seed(1)
    z, state = torch.randn(16, 8), copy.deepcopy(D.state_dict())  # the step's z
    with torch.no_grad():
        before = outputs(D, G0(z, labels), labels).mean()
        D.load_state_dict(state)
        assert outputs(D, G(z, labels), labels).mean() > before


class Rejecting(torch.nn.Module):
    """D's output shifted by `shift`: with a large negative shift, D rejects every fake with confidence."""

    def __init__(self, D, shift):
        super().__init__()
        self.D, self.shift = D, shift

    def forward(self, x, y=None):
        return self.D(x, y) + self.shift


@pytest.mark.parametrize("script", [vanilla_gan, dcgan], ids=["vanilla_gan", "dcgan"])
def test_the_non_saturating_G_loss_learns_where_D_rejects_its_samples(script):
    """The GAN paper's reason for G's loss, in the two scripts whose D ends in a sigmoid: where D(G(z)) ~ 0, G's
    gradient must not vanish. Non-saturating -log D(G(z)) has gradient ~1 in D's logit there, a saturating
    log(1 - D(G(z))) ~D(G(z)) = e^-20. So G's gradient with D shifted by -20 is at least half of that with D as it
    is (~2x for the non-saturating loss, ~1e-9 for a saturating one). (The other papers' G losses are linear or
    quadratic in D's output: their own files test them.)"""
    norms = []
    for shift in (0.0, -20.0):
        G, D, real, labels, args = tiny_models(script)
        opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0), torch.optim.SGD(D.parameters(), lr=0)
        step(script, G, Rejecting(D, shift), opt_G, opt_D, real, labels, args, seed=1)
        norms.append(torch.cat([p.grad.flatten() for p in G.parameters()]).norm().item())
    assert norms[0] > 0 and norms[1] > 0.5 * norms[0]


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_the_label_reaches_G_and_D(script):
    """--conditional: from one z, G draws another image for each label, and D scores one image differently under each
    label (a label concatenated to z, or a projection, that the forward pass ignored would give equal outputs)."""
    torch.manual_seed(0)
    G = script.Generator(latent_dim=16, channels=1, image_size=32, n_classes=3, width=32).eval()  # BatchNorm: eval
    D = script.Discriminator(channels=1, image_size=32, n_classes=3, width=32).eval()  # no dropout
    with torch.no_grad():
        x = G(torch.randn(1, 16).repeat(3, 1), torch.arange(3))
        scores = D(x[:1].repeat(3, 1, 1, 1), torch.arange(3))
    assert (x[0] - x[1]).abs().max() > 1e-4 and (x[1] - x[2]).abs().max() > 1e-4
    assert (scores[0] - scores[1]).abs() > 1e-6 and (scores[1] - scores[2]).abs() > 1e-6


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_the_run_trains_with_the_flags_it_is_given(script, data_root, tmp_path):
    """--d-steps 3: G updates on steps 3 and 6 only; --width 16: G and D built that wide (more parameters than at
    --width 8, and as many as the checkpoint holds); Adam's --beta1/--beta2 in both optimizers; WGAN's --clip
    bounds every critic weight."""
    paper = {"wgan": ["--clip", "0.02"]}.get(script.__name__, ["--beta1", "0.3", "--beta2", "0.95"])
    argv = [*TINY, "--d-steps", "3", *paper]
    argv[argv.index("--width") + 1] = "16"
    assert call(script.main, ["--dataset", "mnist", "--data-root", str(data_root), *argv, "--max-steps", "7"]) == 0
    rows = list(csv.DictReader(open(tmp_path / f"results/{script.__name__}_mnist/losses.csv")))
    assert [r["step"] for r in rows if r["loss_g"]] == ["3", "6"]
    ck = torch.load(tmp_path / f"models/{script.__name__}_mnist/last.pt", weights_only=True)
    size = {w: [sum(p.numel() for p in net(**{**ck["model_args"], "width": w}).parameters())
                for net in (script.Generator, lambda latent_dim, **kw: script.Discriminator(**kw))] for w in (8, 16)}
    assert ck["model_args"]["width"] == 16 and all(a > b for a, b in zip(size[16], size[8]))
    assert sum(p.numel() for k, p in ck["G"].items() if "running" not in k and "num_batches" not in k) == size[16][0]
    if script is wgan:
        assert all(v.abs().max() <= 0.02 for k, v in ck["D"].items() if v.dtype.is_floating_point
                   and "running" not in k)  # BatchNorm's running statistics are buffers, not weights
    else:
        assert all(tuple(ck[o]["param_groups"][0]["betas"]) == (0.3, 0.95) for o in ("opt_G", "opt_D"))


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_run_outputs(script, data_root, tmp_path):
    arch = script.__name__
    assert train(script, data_root, "--epochs", "2", "--sample-every", "5") == 0
    models, results = tmp_path / "models" / f"{arch}_mnist", tmp_path / "results" / f"{arch}_mnist"
    assert sorted(p.name for p in models.iterdir()) == ["epoch_001.pt", "epoch_002.pt", "last.pt"]
    for f in ["epoch_001.png", "epoch_002.png", "progress.gif", "losses.csv", "losses.png", "step_0000005.png"]:
        assert (results / f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(results / "losses.csv")))
    assert len(rows) == 16 and rows[-1]["step"] == "16" and rows[-1]["epoch"] == "2"  # 64 images / 8 = 8 a epoch
    assert list(rows[0]) == ["step", "epoch", "loss_d", "loss_g", *FIGURES[arch]]
    if arch.startswith("wgan"):  # G updates on every 5th batch only: loss_g is empty on the critic-only steps
        assert [i + 1 for i, r in enumerate(rows) if r["loss_g"]] == [5, 10, 15]
        assert all(r["loss_d"] and r["wasserstein_estimate"] for r in rows)
    else:
        assert all(r["loss_g"] for r in rows)
    from PIL import Image
    assert Image.open(results / "progress.gif").n_frames == 2
    ck = torch.load(models / "last.pt", weights_only=True)  # plain data only
    for key in ["format", "version", "arch", "args", "model_args", "epoch", "step", "G", "D", "opt_G", "opt_D",
                "fixed_z", "fixed_labels", "rng", "classes", "image_shape", "data", "train_seconds", "device",
                "torch_version"]:
        assert key in ck, key
    assert (ck["arch"], ck["epoch"], ck["step"], ck["image_shape"]) == (arch, 2, 16, [1, 32, 32])
    assert ck["data"] == {"dataset": "mnist", "native_size": 28, "mapping": "pad", "source": ck["data"]["source"]}
    assert ck["args"]["lr"] == script.parse_args([]).lr and ck["classes"][:2] == ["0", "1"]
    assert ck["world_size"] == 1 and ck["rng_ranks"] == []
    assert ck["device"].startswith("cpu: ") and 0 < ck["train_seconds"] < 600
    assert (models / "last.pt").read_bytes() == (models / "epoch_002.pt").read_bytes()  # one file, two names
    assert torch.load(models / "epoch_001.pt", weights_only=True)["step"] == 8  # replacing last.pt left it alone


def test_a_new_run_drops_the_rows_of_one_killed_before_its_first_checkpoint(data_root, tmp_path):
    """A run killed in its first epoch leaves losses.csv but no checkpoint, so the same command starts afresh: its
    curve must be its own, not appended to the dead run's rows."""
    results = tmp_path / "results" / "dcgan_mnist"
    results.mkdir(parents=True)
    (results / "losses.csv").write_text("step,epoch,loss_d,loss_g,D(x),D(G(z))\n1,1,9,9,0.5,0.5\n2,1,9,9,0.5,0.5\n")
    assert train(dcgan, data_root, "--epochs", "1") == 0
    rows = list(csv.DictReader(open(results / "losses.csv")))
    assert [r["step"] for r in rows] == [str(i) for i in range(1, 9)] and rows[0]["loss_d"] != "9"


def test_last_pt_is_written_where_hard_links_fail(data_root, tmp_path, monkeypatch):
    def no_links(*a):
        raise OSError("hard links not supported")
    monkeypatch.setattr(common.os, "link", no_links)
    assert train(dcgan, data_root, "--epochs", "1") == 0
    models = tmp_path / "models/dcgan_mnist"
    assert_identical(weights(models / "last.pt"), weights(models / "epoch_001.pt"))
    assert not os.path.samefile(models / "last.pt", models / "epoch_001.pt")


RESUMED = [(m, False) for m in SCRIPTS] + [(vanilla_gan, True), (dcgan, True)]  # one-hot and projection labels


@pytest.mark.parametrize("script, conditional", RESUMED, ids=[m.__name__ + "_cond" * c for m, c in RESUMED])
def test_resume_is_exact(script, data_root, tmp_path, conditional):
    """2 epochs straight == stopped inside epoch 2 (--max-steps 11) and resumed: bit-identical weights and optimizer
    states at both epochs' checkpoints, the same losses.csv, and the train time summed over the parts. An epoch is 8
    batches, so for the WGANs the resume lands inside an n_critic = 5 cycle."""
    cond = ["--conditional"] if conditional else []
    assert train(script, data_root, "--epochs", "2", "--name", "straight", *cond) == 0
    assert train(script, data_root, "--epochs", "2", "--name", "split", "--max-steps", "11", *cond) == 0
    part = torch.load(tmp_path / "models/split/last.pt", weights_only=True)
    assert part["step"] == 11
    assert train(script, data_root, "--epochs", "2", "--name", "split", "--resume", *cond) == 0
    assert torch.load(tmp_path / "models/split/last.pt", weights_only=True)["train_seconds"] > part["train_seconds"]
    for f in ("epoch_001.pt", "epoch_002.pt", "last.pt"):
        assert_identical(weights(tmp_path / "models/straight" / f), weights(tmp_path / "models/split" / f))
    rows = list(csv.DictReader(open(tmp_path / "results/split/losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert rows == list(csv.DictReader(open(tmp_path / "results/straight/losses.csv")))  # the same losses, too


def test_a_resume_drops_the_rows_logged_after_its_checkpoint(data_root, tmp_path):
    """A run killed after its epoch-1 checkpoint (step 8) has logged steps 9-11 to losses.csv; resumed, its curve
    holds each step once, with the resumed run's values."""
    assert train(dcgan, data_root, "--epochs", "2", "--name", "straight") == 0
    assert train(dcgan, data_root, "--epochs", "1", "--name", "killed") == 0
    with open(tmp_path / "results/killed/losses.csv", "a") as f:
        f.write("".join(f"{s},2,9,9,0.5,0.5\n" for s in (9, 10, 11)))  # what the dead run logged
    assert train(dcgan, data_root, "--epochs", "2", "--name", "killed", "--resume") == 0
    rows = list(csv.DictReader(open(tmp_path / "results/killed/losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17)) and "9" not in [r["loss_d"] for r in rows]
    assert rows == list(csv.DictReader(open(tmp_path / "results/straight/losses.csv")))


def test_a_checkpoint_from_before_the_average_of_G_resumes_and_starts_its_average(data_root, tmp_path):
    assert train(dcgan, data_root, "--max-steps", "3", "--name", "old") == 0
    path = tmp_path / "models/old/last.pt"
    ck = torch.load(path, weights_only=True)
    del ck["G_ema"], ck["args"]["ema"]
    torch.save(ck, path)
    assert train(dcgan, data_root, "--epochs", "1", "--name", "old", "--resume") == 0
    ck = torch.load(path, weights_only=True)
    assert ck["step"] == 8 and ck["G_ema"]["n_averaged"] == 5 and ck["args"]["ema"] == dcgan.parse_args([]).ema


def test_resume_from_a_given_checkpoint_takes_its_settings(data_root, tmp_path):
    """(common.finish_args, which every script calls: one script stands for all.)"""
    script = wgan
    assert train(script, data_root, "--epochs", "1", "--latent-dim", "12") == 0
    ck = tmp_path / f"models/{script.__name__}_mnist/epoch_001.pt"
    # its settings come from the checkpoint: --latent-dim 12 without typing it again
    assert train(script, data_root, "--epochs", "2", "--resume", str(ck)) == 0
    last = torch.load(tmp_path / f"models/{script.__name__}_mnist/last.pt", weights_only=True)
    assert last["model_args"]["latent_dim"] == 12 and last["epoch"] == 2


@pytest.mark.parametrize("flag, value", [("--lr", "0.001"), ("--seed", "3"), ("--conditional", None)])
def test_resume_refuses_a_typed_flag_that_differs_from_the_checkpoints(flag, value, data_root, tmp_path, capsys):
    """A flag typed with --resume that would change what the run trains ends in one line naming it and both values;
    nothing is written. The run-control flags (--epochs, --device, ...) and flags typed with the run's own value go
    through."""
    assert train(dcgan, data_root, "--max-steps", "2") == 0
    last = tmp_path / "models/dcgan_mnist/last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    typed = [flag] + ([value] if value else [])
    code = call(dcgan.main, ["--data-root", str(data_root), *TINY, "--max-steps", "4", "--resume", str(last), *typed])
    err = capsys.readouterr().err.strip().splitlines()
    shown = {"--lr": "0.001 differs from the run's --lr 0.0002", "--seed": "3 differs from the run's --seed 0",
             "--conditional": "True differs from the run's --conditional False"}[flag]
    assert code == 2 and len(err) == 1 and f"{flag} {shown}" in err[0] and "--name NEW" in err[0]
    assert last.read_bytes() == before
    # the run's own values typed again, and run-control flags, resume as usual
    assert train(dcgan, data_root, "--max-steps", "4", "--resume", "--lr", "2e-4", "--seed", "0", "--epochs", "9") == 0
    assert torch.load(last, weights_only=True)["step"] == 4


def test_resume_refuses_another_scripts_checkpoint(data_root, tmp_path, capsys):
    assert train(dcgan, data_root, "--max-steps", "2") == 0
    assert train(wgan, data_root, "--resume", "models/dcgan_mnist/last.pt") == 2
    assert "written by dcgan.py, not wgan.py" in capsys.readouterr().err


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_a_smoke_run_names_what_it_wrote_and_is_never_overwritten(script, data_root, tmp_path, capsys):
    assert train(script, data_root, "--max-steps", "2") == 0  # stops inside epoch 1: no epoch grid, no GIF yet
    out = capsys.readouterr().out
    assert "step_0000002.png" in out and "progress.gif" not in out
    assert (tmp_path / f"results/{script.__name__}_mnist/losses.png").exists() and "losses.png" in out
    last = tmp_path / f"models/{script.__name__}_mnist/last.pt"
    before = last.read_bytes()
    assert train(script, data_root, "--max-steps", "2") == 2  # the same command again
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "already holds checkpoints" in err[0]
    assert last.read_bytes() == before


# per script, a figure it logs and a bad value for it: losses and the papers' own figures, NaN and +-inf
BAD = {"vanilla_gan": ("loss/d", "nan"), "dcgan": ("D(x)", "inf"), "wgan": ("wasserstein/estimate", "nan"),
       "wgan_gp": ("loss/gp", "-inf"), "lsgan": ("D(G(z))", "nan"), "sngan": ("score/fake", "inf")}


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_a_nan_or_inf_stops_the_run_at_its_step_and_keeps_the_last_good_checkpoint(script, data_root, tmp_path,
                                                                                  capsys, monkeypatch):
    """Resumed after epoch 1, the run logs a bad figure at its 6th step (step 14). Read every LOG_EVERY = 4 steps, it
    is found at step 16 and reported as step 14; losses.csv keeps steps 1-13, and nothing is written from the
    diverged weights (the epoch-1 checkpoint stays last.pt, no epoch-2 checkpoint or grid)."""
    assert train(script, data_root, "--epochs", "1") == 0
    models, results = tmp_path / f"models/{script.__name__}_mnist", tmp_path / f"results/{script.__name__}_mnist"
    good = (models / "last.pt").read_bytes()
    monkeypatch.setattr(common, "LOG_EVERY", 4)
    key, value = BAD[script.__name__]
    exploding_at(script, monkeypatch, 6, key, float(value))
    capsys.readouterr()
    assert train(script, data_root, "--epochs", "2", "--resume") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{key} is {value} at step 14 (epoch 2)" in err and "last good checkpoint" in err
    assert [int(r["step"]) for r in csv.DictReader(open(results / "losses.csv"))] == list(range(1, 14))
    assert (models / "last.pt").read_bytes() == good
    assert not (models / "epoch_002.pt").exists() and not (results / "epoch_002.png").exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_command_line_help(script, capsys):
    assert call(script.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert " ".join(script.__doc__.split()[:6]) in " ".join(out.split())  # the description: the paper's title
    for flag in ["--dataset", "--data-root", "--image-size", "--epochs", "--max-steps", "--batch-size", "--lr",
                 "--latent-dim", "--d-steps", "--conditional", "--seed", "--device", "--out", "--name", "--resume",
                 "--sample-every", "--tensorboard", "--workers", "--amp", f"(default: {script.parse_args([]).lr})"]:
        assert flag in out, flag


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_the_average_of_G_leaves_training_as_it_is(script, data_root, tmp_path, monkeypatch):
    """2 epochs with G's average (--ema 0.5) and with its update made a no-op: G, D and both optimizers bit for bit
    equal. The average starts as G after its first update; the n-th update after it moves it max(1 - decay, 9 /
    (10 + n)) of the way to G, BatchNorm's running statistics too; the grids are drawn from it."""
    from torch.optim.swa_utils import AveragedModel
    real_update, seen = AveragedModel.update_parameters, []
    monkeypatch.setattr(AveragedModel, "update_parameters",
                        lambda self, G: seen.append({k: v.clone() for k, v in G.state_dict().items()})
                        or real_update(self, G))
    assert train(script, data_root, "--epochs", "2", "--ema", "0.5", "--name", "ema") == 0
    monkeypatch.setattr(AveragedModel, "update_parameters", lambda self, G: None)
    assert train(script, data_root, "--epochs", "2", "--ema", "0.5", "--name", "without") == 0
    a, b = weights(tmp_path / "models/ema/last.pt"), weights(tmp_path / "models/without/last.pt")
    assert_identical(a[:4], b[:4])
    d_steps = script.parse_args([]).d_steps
    assert len(seen) == 16 // d_steps and a[4]["n_averaged"] == len(seen)  # 8 steps an epoch; G's updates
    expect = seen[0]
    for n, G in enumerate(seen[1:], 1):
        expect = {k: torch.lerp(v, G[k], max(0.5, 9 / (10 + n))) if v.is_floating_point() else v
                  for k, v in expect.items()}
    assert all(torch.allclose(a[4]["module." + k], v, atol=1e-6) for k, v in expect.items() if v.is_floating_point())
    assert any("running_mean" in k for k in expect) and not all(torch.equal(a[4]["module." + k], a[0][k]) for k in a[0])
    # the same G, but the other run's average never moved from G's first weights: a grid drawn from G would be equal
    grids = [(tmp_path / f"results/{name}/epoch_002.png").read_bytes() for name in ("ema", "without")]
    assert grids[0] != grids[1]


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_seed_fixes_the_run(script, data_root, tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert train(script, data_root, "--max-steps", "2", "--name", name, "--seed", seed) == 0
    a, b, c = (torch.load(tmp_path / f"models/{n}/last.pt", weights_only=True)["G"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_conditional_rgb_64x64_folder(script, data_root, tmp_path):
    """Any channel count and training size the contract allows: 64x64 RGB from a folder of class subfolders,
    conditional: the run is named _cond, its fixed labels give a grid row per class (10 z each)."""
    argv = ["--dataset", "folder", "--data-root", str(data_root / "pets"), "--conditional", *TINY, "--max-steps", "2"]
    assert call(script.main, argv) == 0
    ck = torch.load(tmp_path / f"models/{script.__name__}_folder_cond/last.pt", weights_only=True)
    assert ck["image_shape"] == [3, 64, 64] and ck["classes"] == ["cat", "dog"] and ck["model_args"]["n_classes"] == 2
    assert ck["fixed_labels"].tolist() == [0] * 10 + [1] * 10
    assert (tmp_path / f"results/{script.__name__}_folder_cond/step_0000002.png").exists()


def test_tensorboard(data_root, tmp_path):
    pytest.importorskip("tensorboard")
    assert train(wgan_gp, data_root, "--max-steps", "2", "--tensorboard") == 0
    assert list((tmp_path / "runs" / "wgan_gp_mnist").glob("events.out.tfevents.*"))


def test_tensorboard_curves_of_killed_runs_have_no_repeats(data_root, tmp_path):
    """Events a killed run logged after its last checkpoint, or a run killed before its first one, are purged (as
    TensorBoard reads them), so the curve has each step once, with the values of the run that checkpointed it."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter
    runs = tmp_path / "runs" / "dcgan_mnist"

    def dead_run(steps):  # what a run killed at the last of these steps left behind
        with SummaryWriter(str(runs)) as w:
            for step in steps:
                w.add_scalar("loss/d", 99.0, step)

    def curve():
        ea = EventAccumulator(str(runs))
        ea.Reload()
        return [(e.step, e.value) for e in ea.Scalars("loss/d")]

    dead_run([1, 2, 3])  # killed before its first checkpoint: the same command starts a new run
    assert train(dcgan, data_root, "--epochs", "1", "--tensorboard") == 0
    dead_run([9, 10, 11])  # that run's second epoch, killed after step 11: its checkpoint is step 8
    assert train(dcgan, data_root, "--epochs", "2", "--tensorboard", "--resume") == 0
    steps, values = zip(*curve())
    assert list(steps) == list(range(1, 17)) and 99.0 not in values


def test_tensorboard_missing_is_one_line(data_root, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    assert train(dcgan, data_root, "--max-steps", "2", "--tensorboard") == 2
    assert "pip install tensorboard" in capsys.readouterr().err
