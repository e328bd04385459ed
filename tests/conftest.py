"""Tiny datasets the tests make themselves (no download, no ../shared): an MNIST and a Fashion-MNIST in IDX
format, a CIFAR-10-like image folder with train/ and test/, a labelled and a flat image folder."""
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import common  # noqa: E402
import dcgan  # noqa: E402
import lsgan  # noqa: E402
import sngan  # noqa: E402
import vanilla_gan  # noqa: E402
import wgan  # noqa: E402
import wgan_gp  # noqa: E402

SCRIPTS = [vanilla_gan, dcgan, wgan, wgan_gp, lsgan, sngan]  # the papers, in the order they came out

TINY = ["--width", "8", "--batch-size", "8", "--workers", "0", "--device", "cpu"]


def write_idx(folder, prefix, n, seed):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = rng.integers(0, 256, (n, 20, 20), dtype=np.uint8)  # black 4-pixel margin, like MNIST
    labels = (np.arange(n) % 10).astype(np.uint8)
    with open(folder / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    with open(folder / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.tobytes())


def write_images(folder, n, size, seed, mode="RGB"):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:04d}.png")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true), which installs every optional package the tests use, a skipped test is a failure: a
    pytest.importorskip there means an import broke, not that a package is missing."""
    report = (yield).get_result()
    if report.skipped and os.environ.get("CI") == "true":
        report.outcome, report.longrepr = "failed", f"skipped in CI: {report.longrepr}"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw, "train", 64, 0)
    write_idx(raw, "t10k", 32, 1)
    fashion = root / "FashionMNIST" / "raw"
    fashion.mkdir(parents=True)
    write_idx(fashion, "train", 64, 2)
    write_idx(fashion, "t10k", 32, 3)
    for split, n in (("train", 12), ("test", 6)):
        for c in ("airplane", "cat"):
            write_images(root / "cifar" / split / c, n, (32, 32), hash((split, c)) % 1000)
    write_images(root / "pets" / "cat", 10, (40, 30), 5)
    write_images(root / "pets" / "dog", 10, (30, 50), 6, mode="L")
    write_images(root / "flat", 16, (48, 48), 7)
    (root / "empty").mkdir()
    return root


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, data_root):
    """Each test writes under its own tmp dir, the decode cache too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def call(main, argv):
    """Run a script's main() in-process the way its command line does; returns the exit code."""
    try:
        common.cli(lambda: main(argv))
    except SystemExit as e:
        return e.code
    return 0


def train(script, data_root, *extra):
    """A training script's main() on the tiny MNIST, with TINY's settings and extra flags; -> the exit code."""
    return call(script.main, ["--dataset", "mnist", "--data-root", str(data_root), *TINY, *extra])


def weights(path):
    """A checkpoint's G, D, both optimizers' states and the average of G."""
    ck = torch.load(path, weights_only=True)
    return ck["G"], ck["D"], ck["opt_G"]["state"], ck["opt_D"]["state"], ck["G_ema"]


def assert_identical(a, b):
    """weights(...) of two checkpoints, bit for bit."""
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            va, vb = sa[k], sb[k]
            if isinstance(va, dict):
                assert all(torch.equal(va[j], vb[j]) for j in va), k
            else:
                assert torch.equal(va, vb), k


def exploding_at(script, monkeypatch, n, key="loss/d", value=float("nan")):
    """script.train_step, with the figure `key` at `value` (NaN unless told) on its n-th call."""
    real_step, calls = script.train_step, []

    def step(*a, **k):
        calls.append(1)
        stats = real_step(*a, **k)
        return {**stats, key: torch.tensor(value)} if len(calls) == n else stats
    monkeypatch.setattr(script, "train_step", step)
