"""eval.py --metrics: the statistics against hand-computed cases, and the plumbing with a tiny stand-in feature
network (the real Inception weights are not needed, nor downloaded)."""
import json
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import common
import dcgan
import eval as ev
from conftest import TINY, call


def test_fid_of_a_set_with_itself_is_zero():
    pytest.importorskip("pytorch_fid")
    f = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(ev.fid_from_stats(*ev.stats(f), *ev.stats(f))) < 1e-6


def test_fid_of_two_gaussians_is_the_closed_form():
    """FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); for covariances sharing eigenvectors R,
    S = R diag(a) R^T, the root is R diag(sqrt(a b)) R^T, so FID = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2."""
    pytest.importorskip("pytorch_fid")
    rng = np.random.default_rng(1)
    R, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = R @ np.diag(a) @ R.T, R @ np.diag(b) @ R.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert ev.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


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
    calls = []
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(calls), "standin", None))
    argv = ["--ckpt", *ckpts, "--metrics", "fid,kid", "--n", "40", "--ref", "mnist:test", "--data-root",
            str(data_root), "--kid-subsets", "5", "--kid-subset-size", "20", "--batch-size", "16", "--json", "m.json",
            "--plot", "fid.png"]
    assert call(ev.main, argv) == 0
    out = capsys.readouterr()
    rows = json.loads((tmp_path / "m.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["n"] == 40 and r["ref_n"] == 32 for r in rows)
    assert all(r["fid"] > 0 and "kid" in r and r["seconds"] >= 0 for r in rows)
    assert "epoch" in out.out and "FID" in out.out and "warning: N = 40" in out.err
    assert "comparison" not in out.out and not list(tmp_path.rglob("*compare*"))  # numbers only: no figure
    assert Image.open(tmp_path / "fid.png").size[0] > 100
    assert len(list((tmp_path / "cache/ganzoo/fid").glob("mnist-test-28px-*.npz"))) == 1
    n_calls = len(calls)  # reference (32 images: 2 batches) + 2 checkpoints x 40 samples (3 batches each)
    assert n_calls == 2 + 2 * 3
    calls.clear()
    assert call(ev.main, argv) == 0  # the reference now comes from the cache: only the samples are extracted
    assert len(calls) == 2 * 3
    assert json.loads((tmp_path / "m.json").read_text())[0]["fid"] == pytest.approx(rows[0]["fid"])


def test_metrics_see_exactly_what_save_dir_writes(ckpts, data_root, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(calls), "standin", None))
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
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(), "standin", None))
    f = np.random.default_rng(0).normal(size=(100, 16))
    np.savez(tmp_path / "ref.npz", mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid,kid", "--n", "20", "--ref", "ref.npz",
                          "--json", "m.json"]) == 0
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["fid"] > 0 and "kid" not in row and "KID skipped" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", x=f)
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid", "--n", "20", "--ref", "bad.npz"]) == 2


def test_folder_reference(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(), "standin", None))
    assert call(dcgan.main, ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--image-size", "32",
                             *TINY, "--max-steps", "2"]) == 0
    assert call(ev.main, ["--ckpt", "models/dcgan_folder", "--metrics", "fid,kid", "--n", "16", "--kid-subset-size",
                          "8", "--json", "m.json"]) == 0  # default reference: the training folder itself
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["ref_n"] == 16 and row["ref"] == str(data_root / "flat")


def test_inception_score_on_hand_computed_cases():
    # every p(y|x) uniform: p(y|x) = p(y), KL = 0, IS = 1
    assert ev.inception_score(np.zeros((20, 4)), np.ones((7, 4)), splits=2) == pytest.approx((1.0, 0.0))
    # confident and spread evenly over k classes: KL = log k for every x, IS = k
    k, W = 5, 60 * np.eye(5)
    mean, std = ev.inception_score(np.tile(np.eye(k), (4, 1)), W, splits=4)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    # a small case written out: one part, p(y|x) = softmax(f W^T)
    f, W = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), np.array([[1.0, -1.0], [0.5, 0.5], [0.0, 1.0]])
    logits = f @ W.T
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    py = p.mean(0)
    expected = np.exp(np.mean([sum(p[i, j] * np.log(p[i, j] / py[j]) for j in range(3)) for i in range(3)]))
    assert ev.inception_score(f, W, splits=1)[0] == pytest.approx(expected, rel=1e-12)


def test_inception_score_from_the_classifier(ckpts, monkeypatch, capsys, tmp_path):
    calls = []
    W = np.random.default_rng(0).normal(size=(10, 16))  # 16-d stand-in features -> 10 "classes"
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(calls), "standin", W))
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "is", "--n", "30", "--batch-size", "10",
                          "--json", "m.json"]) == 0
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert 1 <= row["is"] <= 10 and row["is_std"] >= 0 and "fid" not in row and "ref" not in row
    assert len(calls) == 3  # IS needs no reference: only the 30 samples went through the network
    assert "IS" in capsys.readouterr().out


def test_is_without_a_classifier_and_pr_are_declined_in_one_line(ckpts, monkeypatch, capsys):
    monkeypatch.setattr(ev, "feature_extractor", lambda *a: (standin(), "standin", None))
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "is"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("note: Inception Score is not computed") and "classifier layer" in err[0]
    assert err[-1].startswith("error: --metrics: nothing left") and "nan" not in " ".join(err).lower()
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "pr"]) == 2
    assert "precision/recall is not computed" in capsys.readouterr().err
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "bogus"]) == 2


def test_classifier_comes_from_the_weights_file(tmp_path):
    """The real feature_extractor on a weights file with the FID Inception's keys (random values): the classifier
    is the file's fc.weight, and None when the file fills it with NaN as FID-only files do."""
    pytest.importorskip("pytorch_fid")
    import torchvision
    sd = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False,
                                         transform_input=False).state_dict()
    torch.save(sd, tmp_path / "full.pth")
    f, name, classifier = ev.feature_extractor(str(tmp_path / "full.pth"), torch.device("cpu"))
    assert classifier.shape == (1008, 2048) and np.array_equal(classifier, sd["fc.weight"].double().numpy())
    assert f(torch.rand(2, 3, 28, 28)).shape == (2, 2048) and name.startswith("pytorch-fid-")
    sd["fc.weight"].fill_(float("nan"))
    torch.save(sd, tmp_path / "fid_only.pth")
    assert ev.feature_extractor(str(tmp_path / "fid_only.pth"), torch.device("cpu"))[2] is None


def test_missing_weights_are_one_line(ckpts, tmp_path, monkeypatch, capsys):
    pytest.importorskip("pytorch_fid")
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid", "--inception-weights", "nope.pth"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: Inception weights nope.pth: no such file"
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid", "--inception-weights", "junk.pth"]) == 1
    assert "is not the FID Inception state dict" in capsys.readouterr().err
    # no file anywhere and no network: one line that says which file to put where
    import pytorch_fid.inception as pfi

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv(ev.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        assert call(ev.main, ["--ckpt", ckpts[0], "--metrics", "fid"]) == 1
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: FID Inception weights not found") and ev.WEIGHTS_NAME in err
    assert str(tmp_path / "hub" / "checkpoints") in err


def test_compiled_inception_gives_the_plain_features(tmp_path, capsys):
    """--inception compiled (eval.py's default on CPU) is pytorch-fid's network through torch.compile: the same
    float32 features to rounding, under the same cache name; bf16 is named apart so its figures never mix."""
    pytest.importorskip("pytorch_fid")
    import torchvision
    torch.manual_seed(0)
    sd = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=True,
                                         transform_input=False).state_dict()
    torch.save(sd, tmp_path / "w.pth")
    x = torch.rand(3, 3, 28, 28)
    plain, name, _ = ev.feature_extractor(str(tmp_path / "w.pth"), torch.device("cpu"), "plain")
    fast, fast_name, _ = ev.feature_extractor(str(tmp_path / "w.pth"), torch.device("cpu"), "compiled")
    a, b = plain(x), fast(x)
    assert "torch.compile" not in capsys.readouterr().err  # it compiled, rather than falling back to plain
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().mean().item())
    assert fast_name == name
    assert ev.feature_extractor(str(tmp_path / "w.pth"), torch.device("cpu"), "bf16")[1] == name + "-bf16"


def test_features_pad_the_last_batch_so_the_network_sees_one_shape():
    shapes = []

    def extract(x):
        shapes.append(tuple(x.shape))
        return x.flatten(1)[:, :4] * 1  # a per-image function of the image
    images = torch.randint(0, 256, (23, 1, 4, 4), dtype=torch.uint8)
    f = ev.features(extract, images, 10, None)
    assert shapes == [(10, 3, 4, 4)] * 3 and f.shape == (23, 4)
    assert np.array_equal(f, (images.float() / 255).expand(-1, 3, -1, -1).flatten(1)[:, :4].numpy())
