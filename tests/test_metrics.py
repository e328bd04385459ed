"""eval.py --metrics: the statistics against hand-computed cases, and the plumbing with a tiny stand-in feature
network (the real Inception weights are not needed, nor downloaded)."""
import json
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import eval as ev
from conftest import TINY, call


def test_fid_of_a_set_with_itself_is_zero():
    pytest.importorskip("scipy")
    f = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(ev.fid_from_stats(*ev.stats(f), *ev.stats(f))) < 1e-6


def test_fid_of_two_gaussians_is_the_closed_form():
    """FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); for covariances sharing eigenvectors R,
    S = R diag(a) R^T, the root is R diag(sqrt(a b)) R^T, so FID = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    R, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = R @ np.diag(a) @ R.T, R @ np.diag(b) @ R.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert ev.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_fid_is_pytorch_fids_and_runs_on_scipy_1_18(monkeypatch):
    """The same figure as pytorch-fid's calculate_frechet_distance; and with sqrtm as SciPy 1.18 has it (no
    `disp`, one return value), where pytorch-fid 0.3.0's own call raises TypeError (seen on a current install).
    pytorch-fid's figure is taken with sqrtm as SciPy < 1.18 has it, so the test runs on either SciPy."""
    pytest.importorskip("pytorch_fid")
    import scipy.linalg
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(300, 12)), rng.normal(0.3, 1.2, size=(300, 12))
    a, b = ev.stats(f1), ev.stats(f2)
    real_sqrtm = scipy.linalg.sqrtm  # called with the matrix alone, it returns the root alone on every SciPy
    with monkeypatch.context() as m:
        m.setattr(scipy.linalg, "sqrtm", lambda A, disp=True: real_sqrtm(A) if disp else (real_sqrtm(A), 0.0))
        expected = calculate_frechet_distance(*a, *b)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda A: real_sqrtm(A))
    assert ev.fid_from_stats(*a, *b) == pytest.approx(expected, rel=1e-9)


def test_kid_is_the_unbiased_estimator():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1, size=(5, 3))
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    mean, std = ev.kid(x, y, subsets=3, subset_size=5)  # a subset of all 5 is a permutation: same value
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std < 1e-9
    same = rng.normal(size=(2000, 3))
    assert abs(ev.kid(same[:1000], same[1000:], subsets=10, subset_size=500)[0]) < 0.01  # unbiased: ~0


def standin(calls=None):
    """A tiny deterministic 'feature network': 4x4 average pool and a fixed projection, on [0, 1] input."""
    w = torch.randn(48, 16, generator=torch.Generator().manual_seed(0))

    def f(x):
        assert x.shape[1] == 3 and 0 <= x.min() and x.max() <= 1
        if calls is not None:
            calls.append(x.clone())
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ w
    return f


@pytest.fixture
def ckpts(data_root, tmp_path):
    base = ["--data-root", str(data_root), *TINY]
    assert call(dcgan.main, base + ["--epochs", "2"]) == 0
    return [str(tmp_path / "models/dcgan_mnist/epoch_001.pt"), str(tmp_path / "models/dcgan_mnist/epoch_002.pt")]


def test_metrics_table_json_plot_and_reference_cache(ckpts, data_root, tmp_path, monkeypatch, capsys):
    from matplotlib.figure import Figure
    calls, figures, savefig = [], [], Figure.savefig
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(calls), "standin"))
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or savefig(fig, *a, **k))
    argv = ["--ckpt", *ckpts, "--metrics", "fid,kid", "--n", "40", "--ref", "mnist:test", "--data-root",
            str(data_root), "--batch-size", "16", "--json", "m.json",
            "--plot", "fid.png"]
    assert call(ev.main, argv) == 0
    out = capsys.readouterr()
    rows = json.loads((tmp_path / "m.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["n"] == 40 and r["ref_n"] == 32 for r in rows)
    assert all(r["fid"] > 0 and "kid" in r and r["seconds"] >= 0 for r in rows)
    assert "epoch" in out.out and "FID" in out.out and "warning: N = 40" in out.err
    assert "comparison" not in out.out and not list(tmp_path.rglob("*compare*"))  # numbers only: no figure
    assert Image.open(tmp_path / "fid.png").size[0] > 100
    line, = figures[-1].axes[0].lines  # --plot: one run, one point per checkpoint, at its epoch and FID
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [r["fid"] for r in rows]
    assert len(list((tmp_path / "cache/ganzoo/fid").glob("mnist-test-28px-*.npz"))) == 1
    n_calls = len(calls)  # reference (32 images: 2 batches) + 2 checkpoints x 40 samples (3 batches each)
    assert n_calls == 2 + 2 * 3
    calls.clear()
    assert call(ev.main, argv) == 0  # the reference now comes from the cache: only the samples are extracted
    assert len(calls) == 2 * 3
    assert json.loads((tmp_path / "m.json").read_text())[0]["fid"] == pytest.approx(rows[0]["fid"])


def test_metrics_see_exactly_what_save_dir_writes(ckpts, data_root, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(calls), "standin"))
    common_args = ["--ckpt", ckpts[1], "--n", "12", "--seed", "5", "--data-root", str(data_root)]
    assert call(ev.main, common_args + ["--metrics", "fid", "--ref", "mnist:test"]) == 0
    calls.clear()  # the second time the reference comes from the cache: every call is a batch of samples
    assert call(ev.main, common_args + ["--metrics", "fid", "--ref", "mnist:test", "--batch-size", "5"]) == 0
    seen = torch.cat(calls)[:12]  # grey repeated to 3 channels, /255 (the last batch of 5 is padded to 5)
    assert call(ev.main, common_args + ["--save-dir", "s"]) == 0
    files = sorted((tmp_path / "s").iterdir())
    saved = torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in files]).float() / 255
    assert saved.shape == (12, 28, 28) and torch.equal(seen[:, 0], saved) and torch.equal(seen[:, 2], saved)


def test_npz_reference_gives_fid_and_skips_kid(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(), "standin"))
    f = np.random.default_rng(0).normal(size=(100, 16))
    np.savez(tmp_path / "ref.npz", mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid,kid", "--n", "20", "--ref", "ref.npz",
                          "--json", "m.json"]) == 0
    row = json.loads((tmp_path / "m.json").read_text())[0]
    out = capsys.readouterr()
    assert row["fid"] > 0 and "kid" not in row and "KID skipped" in out.err
    assert "reference: ref.npz (precomputed mu and sigma)" in out.out
    np.savez(tmp_path / "bad.npz", x=f)
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid", "--n", "20", "--ref", "bad.npz"]) == 2


def test_folder_reference(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(), "standin"))
    assert call(dcgan.main, ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--image-size", "32",
                             *TINY, "--max-steps", "2"]) == 0
    assert call(ev.main, ["--ckpt", "models/dcgan_folder", "--metrics", "fid,kid", "--n", "16",
                          "--json", "m.json"]) == 0  # default reference: the training folder itself
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["ref_n"] == 16 and row["ref"] == str(data_root / "flat")


def test_unknown_metrics_are_refused_in_one_line(ckpts, capsys):
    for unknown in ("is", "pr", "bogus"):  # IS and precision/recall: not offered
        assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", unknown]) == 2
        assert f"--metrics: unknown {unknown}" in capsys.readouterr().err


def inception_weights(folder, seed=0):
    """A file with the FID Inception's keys (random values) where pytorch-fid looks for its download:
    folder/hub/checkpoints/ (TORCH_HOME=folder)."""
    import torchvision
    torch.manual_seed(seed)
    sd = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True,
                                         transform_input=False).state_dict()
    (folder / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / "hub" / "checkpoints" / ev.WEIGHTS_NAME)
    return sd


def test_the_network_comes_from_the_weights_file(tmp_path, monkeypatch):
    """The real feature_extractor, on weights in torch.hub's cache ($TORCH_HOME): 2048-d features, and a name that
    changes with the file's bytes, so that features cached for other weights are never reused."""
    pytest.importorskip("pytorch_fid")
    names = []
    for seed in (0, 1):
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / str(seed)))
        inception_weights(tmp_path / str(seed), seed=seed)
        f, name = ev.feature_extractor(torch.device("cpu"))
        assert f(torch.rand(2, 3, 28, 28)).shape == (2, 2048) and name.startswith("pytorch-fid-")
        names.append(name)
    assert names[0] != names[1]


def test_missing_or_broken_weights_are_one_line(ckpts, tmp_path, monkeypatch, capsys):
    """No weights in the cache and no network: one line that says which file to put where; a file there that is not
    the network's weights: one line too."""
    pytest.importorskip("pytorch_fid")
    import pytorch_fid.inception as pfi

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    with monkeypatch.context() as offline_here:  # undone at its end; the isolation fixture's patches stay
        offline_here.setattr(pfi, "load_state_dict_from_url", offline)
        offline_here.setenv("TORCH_HOME", str(tmp_path / "empty"))
        assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the FID Inception weights could not be loaded (URLError)")
    assert f"put {ev.WEIGHTS_NAME} in {tmp_path / 'empty' / 'hub' / 'checkpoints'}" in err[0]
    # the rest still runs in this test's own folder and cache (conftest's isolation)
    assert Path.cwd() == tmp_path and os.environ["XDG_CACHE_HOME"] == str(tmp_path / "cache")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "junk"))
    (tmp_path / "junk/hub/checkpoints").mkdir(parents=True)
    (tmp_path / "junk/hub/checkpoints" / ev.WEIGHTS_NAME).write_bytes(b"not a state dict")
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the FID Inception weights could not be loaded" in err[0]


def test_bf16_features_are_approximate_and_labelled_apart(tmp_path, monkeypatch):
    """--bf16 runs the network in bfloat16: features close to the float32 ones but not equal, and a network name
    of their own, so that its cached features and its figures never mix with float32 ones."""
    pytest.importorskip("pytorch_fid")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    inception_weights(tmp_path)
    x = torch.rand(3, 3, 28, 28)
    f32, name = ev.feature_extractor(torch.device("cpu"))
    f16, name16 = ev.feature_extractor(torch.device("cpu"), bf16=True)
    a, b = f32(x), f16(x)
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert ((a - b).norm() / a.norm()).item() < 0.05 and name16 == name + "-bf16"


def test_features_batch_the_images_and_see_grey_as_three_equal_channels():
    shapes = []

    def extract(x):
        shapes.append(tuple(x.shape))
        return x.flatten(1)[:, :4] * 1  # a per-image function of the image
    images = torch.randint(0, 256, (23, 1, 4, 4), dtype=torch.uint8)
    f = ev.features(extract, images, 10, None)
    assert shapes == [(10, 3, 4, 4), (10, 3, 4, 4), (3, 3, 4, 4)] and f.shape == (23, 4)
    assert np.array_equal(f, (images.float() / 255).expand(-1, 3, -1, -1).flatten(1)[:, :4].numpy())
