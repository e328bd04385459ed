"""eval.py on every checkpoint kind, and its refusals (missing, truncated, foreign, hostile)."""
import pickle
import subprocess
import sys

import pytest
import torch
from PIL import Image

import common
import dcgan
import eval as ev
from conftest import ROOT, SCRIPTS, TINY, call


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    """Tiny checkpoints of each kind: unconditional MNIST (epochs 1, 2; an average of G), conditional MNIST, a 64x64
    folder."""
    out = tmp_path_factory.mktemp("runs")
    base = ["--data-root", str(data_root), *TINY, "--out", str(out)]
    assert call(dcgan.main, base + ["--dataset", "mnist", "--epochs", "2", "--ema", "0.999"]) == 0
    assert call(dcgan.main, base + ["--dataset", "mnist", "--conditional", "--epochs", "1"]) == 0
    assert call(dcgan.main, ["--dataset", "folder", "--data-root", str(data_root / "pets"), *TINY[:-4],
                             "--workers", "0", "--device", "cpu", "--out", str(out), "--conditional",
                             "--max-steps", "2"]) == 0
    return out / "models"


def test_grid_from_a_file_and_from_a_run_folder(runs, capsys):
    assert call(ev.main, ["--ckpt", str(runs / "dcgan_mnist/epoch_002.pt"), "--n", "16", "--nrow", "4"]) == 0
    out = runs.parent / "results/dcgan_mnist/eval_epoch_002.png"
    assert f"samples: {out}" in capsys.readouterr().out and Image.open(out).size[0] > 100
    assert call(ev.main, ["--ckpt", str(runs / "dcgan_mnist"), "--out", "grid.png"]) == 0
    assert Image.open("grid.png").size[0] > 100


def test_generator_rebuilt_from_the_checkpoint_alone_from_its_average_or_raw(runs, tmp_path, capsys):
    """The average of G by default, G as trained with --raw; a checkpoint from before the average: G, untitled."""
    path = runs / "dcgan_mnist/last.pt"
    saved = torch.load(path, weights_only=True)
    z = ev.latents(4, saved["model_args"]["latent_dim"], 0)
    ema = {k.removeprefix("module."): v for k, v in saved["G_ema"].items() if k != "n_averaged"}
    for raw, state in ((False, ema), (True, saved["G"])):
        G, ck = ev.load_generator(path, torch.device("cpu"), raw=raw)
        ref = dcgan.Generator(**ck["model_args"]).eval()
        ref.load_state_dict(state)
        with torch.no_grad():
            assert torch.equal(G(z), ref(z))
        assert ("EMA 0.999" in ev.title(ck)) is not raw
    assert not torch.equal(ema["net.0.weight"], saved["G"]["net.0.weight"])
    del saved["G_ema"]
    torch.save(saved, tmp_path / "old.pt")
    G, ck = ev.load_generator(tmp_path / "old.pt", torch.device("cpu"))
    assert torch.equal(G.state_dict()["net.0.weight"], saved["G"]["net.0.weight"]) and "EMA" not in ev.title(ck)
    assert call(ev.main, ["--ckpt", str(path), "--raw", "--out", str(tmp_path / "raw.png")]) == 0


def test_samples_do_not_depend_on_n(runs):
    G, ck = ev.load_generator(runs / "dcgan_mnist/last.pt", torch.device("cpu"))
    assert torch.equal(ev.latents(1500, 7, 3)[:1001], ev.latents(1001, 7, 3))
    a = ev.generate(G, ev.latents(10, 100, 3), None, torch.device("cpu"), batch_size=5)
    b = ev.generate(G, ev.latents(20, 100, 3), None, torch.device("cpu"), batch_size=5)
    assert torch.equal(a, b[:10])
    # another batch size may pick other conv kernels: equal up to float rounding, not bit for bit
    c = ev.generate(G, ev.latents(10, 100, 3), None, torch.device("cpu"), batch_size=3)
    assert torch.allclose(a, c, atol=1e-3)


@pytest.fixture
def grids(monkeypatch):
    """What eval.py hands to common.save_grid, call by call: (images, keyword arguments); the files are still written."""
    seen, save = [], common.save_grid
    monkeypatch.setattr(common, "save_grid", lambda x, path, **kw: seen.append((x, kw)) or save(x, path, **kw))
    return seen


def G_of(ck_path, z, labels):
    G, _ = ev.load_generator(ck_path, torch.device("cpu"))
    with torch.no_grad():
        return G(z, labels)


def test_conditional_grid_and_labels(runs, capsys, grids):
    """The default figure has one row per class, each row G's samples of that class from the same z; --label (an
    index or a name) gives G's samples of that class."""
    ck = str(runs / "dcgan_mnist_cond/last.pt")
    assert call(ev.main, ["--ckpt", ck, "--n", "20"]) == 0  # one row per class
    x, kw = grids[-1]
    z = ev.latents(2, 100, 0).repeat(10, 1)
    assert kw["nrow"] == 2 and kw["row_labels"] == [str(i) for i in range(10)]
    torch.testing.assert_close(x, G_of(ck, z, torch.arange(10).repeat_interleave(2)))
    for label in ["7", "3"]:
        assert call(ev.main, ["--ckpt", ck, "--label", label, "--n", "8", "--out", f"l{label}.png"]) == 0
        torch.testing.assert_close(grids[-1][0], G_of(ck, ev.latents(8, 100, 0), torch.full((8,), int(label))))
    pets = str(runs / "dcgan_folder_cond/last.pt")
    assert call(ev.main, ["--ckpt", pets, "--label", "dog", "--n", "4", "--out", "dog.png"]) == 0
    torch.testing.assert_close(grids[-1][0], G_of(pets, ev.latents(4, 100, 0), torch.full((4,), 1)))  # cat=0, dog=1
    assert call(ev.main, ["--ckpt", ck, "--label", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not a class" in err and "0=0" in err and "9=9" in err
    assert call(ev.main, ["--ckpt", str(runs / "dcgan_mnist/last.pt"), "--label", "3"]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_comparison_of_several_checkpoints(runs, capsys):
    paths = [str(runs / "dcgan_mnist/epoch_001.pt"), str(runs / "dcgan_mnist/epoch_002.pt"),
             str(runs / "dcgan_mnist_cond/last.pt"), str(runs / "dcgan_folder_cond/last.pt")]
    assert call(ev.main, ["--ckpt", *paths, "--out", "cmp.png"]) == 0
    assert "comparison of 4 checkpoints" in capsys.readouterr().out and Image.open("cmp.png").size[1] > 200
    assert call(ev.main, ["--ckpt", *paths[:2]]) == 0  # default: beside the run, in its results folder
    assert Image.open(runs.parent / "results/dcgan_mnist/eval_epoch_002_compare.png").size[1] > 100
    assert call(ev.main, ["--ckpt", *paths[:2], "--save-dir", "s"]) == 2
    assert "take one checkpoint" in capsys.readouterr().err


def test_interpolation_png_and_gif(runs, grids):
    """A walk's first and last images in each row are G's samples of the row's two end z; the GIF's frames are its
    steps there and back."""
    ck = str(runs / "dcgan_mnist/last.pt")
    assert call(ev.main, ["--ckpt", ck, "--interpolate", "--steps", "5", "--n", "15", "--out", "walk.png"]) == 0
    x, kw = grids[-1]
    z0, z1 = ev.latents(6, 100, 0).chunk(2)  # 15 // 5 = 3 rows
    assert kw["nrow"] == 5 and len(x) == 15
    torch.testing.assert_close(x[0::5], G_of(ck, z0, None), atol=1e-4, rtol=0)
    torch.testing.assert_close(x[4::5], G_of(ck, z1, None), atol=1e-4, rtol=0)
    assert call(ev.main, ["--ckpt", ck, "--interpolate", "--steps", "5", "--out", "walk.gif"]) == 0
    assert Image.open("walk.gif").n_frames == 8  # 5 there, 3 back
    z0, z1 = torch.randn(2, 100), torch.randn(2, 100)
    assert torch.allclose(ev.slerp(z0, z1, torch.zeros(2)), z0, atol=1e-5)
    assert torch.allclose(ev.slerp(z0, z1, torch.ones(2)), z1, atol=1e-5)


def test_save_dir_writes_native_size_uint8(runs, tmp_path):
    assert call(ev.main, ["--ckpt", str(runs / "dcgan_mnist/last.pt"), "--n", "5", "--save-dir", "s"]) == 0
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 5 and Image.open(files[0]).size == (28, 28) and Image.open(files[0]).mode == "L"
    assert call(ev.main, ["--ckpt", str(runs / "dcgan_folder_cond/last.pt"), "--n", "3", "--save-dir", "p"]) == 0
    assert Image.open(tmp_path / "p/000000.png").size == (64, 64)
    # the files are the samples exactly: decode them and compare with a fresh generation
    G, ck = ev.load_generator(runs / "dcgan_mnist/last.pt", torch.device("cpu"))
    x = ev.native_uint8(ev.generate(G, ev.latents(5, 100, 0), None, torch.device("cpu")), ck)
    import numpy as np
    assert np.array_equal(np.array(Image.open(files[4])), x[4, 0].numpy())


class Hostile:
    def __reduce__(self):
        return (open, ("pwned.txt", "w"))


@pytest.mark.parametrize("kind", ["hostile", "truncated", "foreign_dict", "text", "missing", "not_generator"])
def test_bad_checkpoints_are_refused_in_one_line(kind, runs, tmp_path, capsys):
    path = tmp_path / "x.pt"
    if kind == "hostile":  # would create pwned.txt if unpickled
        torch.save({"format": "ganzoo-checkpoint", "G": Hostile()}, path)
    elif kind == "truncated":
        data = (runs / "dcgan_mnist/last.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "text":
        path.write_text("hello")
    elif kind == "not_generator":
        ck = torch.load(runs / "dcgan_mnist/last.pt", weights_only=True)
        ck["G"] = ck["G_ema"] = {"w": torch.zeros(1)}
        torch.save(ck, path)
    assert call(ev.main, ["--ckpt", str(path), "--device", "cpu"]) in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not (tmp_path / "pwned.txt").exists()
    assert ("refused" in err[0]) == (kind == "hostile")


def test_a_pickle_that_would_run_code_is_refused_by_a_real_process(tmp_path):
    """The command line as a user meets it: it ends in one line, no traceback, and the pickle's code never runs."""
    with open(tmp_path / "pickle.pt", "wb") as f:
        pickle.dump(Hostile(), f)
    out = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--ckpt", "pickle.pt", "--device", "cpu"],
                         capture_output=True, text=True, cwd=tmp_path)
    last = out.stderr.strip().splitlines()[-1]  # (after torch's own warning about the file's pickle protocol)
    assert out.returncode == 1 and last.startswith("error: pickle.pt: refused") and "Traceback" not in out.stderr
    assert not (tmp_path / "pwned.txt").exists()


def test_resume_refuses_a_hostile_checkpoint(data_root, tmp_path, capsys):
    torch.save({"format": "ganzoo-checkpoint", "G": Hostile()}, tmp_path / "evil.pt")
    assert call(dcgan.main, ["--data-root", str(data_root), *TINY, "--resume", str(tmp_path / "evil.pt")]) == 1
    assert "refused" in capsys.readouterr().err and not (tmp_path / "pwned.txt").exists()


@pytest.fixture(scope="module")
def papers(tmp_path_factory, data_root):
    """A tiny conditional MNIST checkpoint of each script."""
    out = tmp_path_factory.mktemp("papers")
    for script in SCRIPTS:
        assert call(script.main, ["--dataset", "mnist", "--data-root", str(data_root), *TINY, "--out", str(out),
                                  "--conditional", "--epochs", "1"]) == 0
    return {m.__name__: out / "models" / f"{m.__name__}_mnist_cond" / "last.pt" for m in SCRIPTS}


@pytest.mark.parametrize("arch", ["vanilla_gan", "wgan", "wgan_gp", "lsgan", "sngan"])
def test_eval_on_each_papers_checkpoints(arch, papers, data_root, tmp_path, monkeypatch):
    """Grid, --label, --interpolate, --save-dir and --metrics (a stand-in feature network) on each script's file."""
    import json
    from test_metrics import standin
    ck = str(papers[arch])
    G, loaded = ev.load_generator(ck, torch.device("cpu"))
    assert type(G).__module__ == arch and loaded["arch"] == arch
    assert call(ev.main, ["--ckpt", ck, "--out", "rows.png"]) == 0
    assert call(ev.main, ["--ckpt", ck, "--label", "3", "--n", "8", "--out", "three.png"]) == 0
    gifs, save_gif = [], common.save_gif  # (frames, not the file's: GIF merges equal frames, as a tiny G draws)
    monkeypatch.setattr(common, "save_gif", lambda f, out, ms: gifs.append(len(f)) or save_gif(f, out, ms))
    assert call(ev.main, ["--ckpt", ck, "--interpolate", "--steps", "4", "--out", "walk.gif"]) == 0
    assert call(ev.main, ["--ckpt", ck, "--n", "6", "--save-dir", "s"]) == 0
    assert Image.open("rows.png").size[1] > 100 and gifs == [6] and Image.open("walk.gif").n_frames >= 1
    assert len(list((tmp_path / "s").iterdir())) == 6 and Image.open(tmp_path / "s/000000.png").size == (28, 28)
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(), "standin"))
    assert call(ev.main, ["--ckpt", ck, "--metrics", "fid,kid", "--n", "20", "--ref", "mnist:test", "--data-root",
                          str(data_root), "--json", "m.json"]) == 0
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["arch"] == arch and row["fid"] > 0 and "kid" in row and row["n"] == 20


def test_one_figure_compares_the_papers(papers, tmp_path, capsys):
    paths = [str(papers[m.__name__]) for m in SCRIPTS]
    assert call(ev.main, ["--ckpt", *paths, "--out", "papers.png"]) == 0
    assert "comparison of 6 checkpoints" in capsys.readouterr().out and Image.open("papers.png").size[1] > 200
    # rows are titled with the run, and for the WGANs with G's updates: 8 steps at n_critic 5 are 1 G update
    titles = [ev.title(common.load_checkpoint(p)) for p in paths]
    assert titles[0] == "vanilla_gan_mnist_cond  epoch 1  (step 8)" and titles[2].endswith("(step 8, 1 G update)")


def test_no_ckpt_takes_the_newest_run(papers, tmp_path, capsys):
    assert call(ev.main, ["--n", "4"]) == 2  # nothing under the current folder yet: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no --ckpt given and no models/*/last.pt" in err[0]
    import os
    import shutil
    for i, arch in enumerate(("wgan", "dcgan")):  # dcgan's is written last: it is the newest
        shutil.copytree(papers[arch].parent, tmp_path / "models" / papers[arch].parent.name)
        os.utime(tmp_path / "models" / papers[arch].parent.name / "last.pt", (1e9 + i, 1e9 + i))
    assert call(ev.main, ["--n", "4"]) == 0
    out = capsys.readouterr()
    assert "taking the newest run, models/dcgan_mnist_cond/last.pt" in out.err
    assert (tmp_path / "results/dcgan_mnist_cond/eval_last.png").exists() and "eval_last.png" in out.out
