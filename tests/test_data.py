"""common.py: the data layer (every dataset path, the size mappings, the decode cache, offline errors),
the command line's checks, the device choice and atomic writes."""
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import common
import dcgan
from conftest import ROOT, SCRIPTS, TINY, call, write_images


def test_mnist_is_padded_to_32_and_back_exactly(data_root):
    d = common.load_dataset("mnist", data_root, 32)
    assert d.images.shape == (64, 1, 32, 32) and d.images.dtype == torch.uint8 and d.mapping == "pad"
    assert d.classes == [str(i) for i in range(10)] and d.labels[:3].tolist() == [0, 1, 2]
    raw = common.load_dataset("mnist", data_root, 28).images
    assert torch.equal(common.to_native_size(d.images, 28, "pad"), raw)
    assert d.images[:, :, :2].sum() == 0  # the pad is black, like the digits' own margin


def test_resize_mapping_and_its_inverse(data_root):
    d = common.load_dataset("mnist", data_root, 64)
    assert d.images.shape == (64, 1, 64, 64) and d.mapping == "resize"
    assert common.to_native_size(d.images, 28, "resize").shape == (64, 1, 28, 28)
    # a smooth image (a blurred blob, like a digit stroke) survives 28 -> 64 -> 28 to within rounding
    r = torch.arange(28.0)
    blob = (255 * torch.exp(-((r[:, None] - 13) ** 2 + (r[None] - 15) ** 2) / 40)).round().to(torch.uint8)
    up, mapping = common.to_training_size(blob[None, None], 64)
    back = common.to_native_size(up, 28, mapping)
    err = (back.float() - blob.float()).abs()
    assert mapping == "resize" and err.max() <= 6 and err.mean() < 0.5  # measured: max 4 at the peak


def test_fashion_mnist(data_root):
    d = common.load_dataset("fashion-mnist", data_root, 32, split="test")
    assert d.images.shape == (32, 1, 32, 32) and d.classes[0] == "T-shirt/top" and d.mapping == "pad"


def test_cifar10_from_an_image_folder(data_root):
    d = common.load_dataset("cifar10", data_root / "cifar", 32)
    assert d.images.shape == (24, 3, 32, 32) and d.classes == ["airplane", "cat"] and d.mapping == "none"
    t = common.load_dataset("cifar10", data_root / "cifar", 64, split="test")
    assert t.images.shape == (12, 3, 64, 64) and (t.native_size, t.mapping) == (32, "resize")


def test_cifar10_found_under_cifar10_jpg(data_root, tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "cifar10-jpg").symlink_to(data_root / "cifar")
    assert len(common.load_dataset("cifar10", tmp_path / "root", 32)) == 24


def test_folder_labels_resize_crop_and_cache(data_root, tmp_path):
    d = common.load_dataset("folder", data_root / "pets", 32, conditional=True, workers=0)
    assert d.images.shape == (20, 3, 32, 32) and d.classes == ["cat", "dog"]
    assert d.labels.tolist() == [0] * 10 + [1] * 10
    cached = list((tmp_path / "cache" / "ganzoo").glob("folder-*.pt"))
    assert len(cached) == 1
    assert torch.equal(common.load_dataset("folder", data_root / "pets", 32, workers=0).images, d.images)
    assert len(list((tmp_path / "cache" / "ganzoo").glob("folder-*.pt"))) == 1  # read back, not decoded again
    flat = common.load_dataset("folder", data_root / "flat", 64, workers=0)
    assert flat.images.shape == (16, 3, 64, 64) and flat.classes == []


def test_a_folder_too_big_for_memory_stops_in_one_line(data_root, monkeypatch, capsys):
    monkeypatch.setattr(common, "RAM_BUDGET", 16 * 3 * 32 * 32 - 1)  # one byte short of the 16 images at 32x32
    argv = ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--image-size", "32", *TINY]
    assert call(dcgan.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "16 images at 32x32" in err[0] and "use a subset" in err[0]
    monkeypatch.setattr(common, "RAM_BUDGET", 16 * 3 * 32 * 32)
    assert len(common.load_dataset("folder", data_root / "flat", 32, workers=0)) == 16


def test_the_same_batches_every_time():
    a, b = common.epoch_order(100, 3, 5), common.epoch_order(100, 3, 5)
    assert torch.equal(a, b) and not torch.equal(a, common.epoch_order(100, 3, 6))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_data_offline_is_one_clear_line(name, tmp_path, monkeypatch, capsys):
    import torchvision.datasets as tvd

    def offline(*a, download=False, **k):
        if download:
            raise OSError("[Errno -3] Temporary failure in name resolution")
        raise RuntimeError("Dataset not found. You can use download=True to download it")

    monkeypatch.setattr(tvd, "MNIST", offline)
    monkeypatch.setattr(tvd, "CIFAR10", offline)
    code = call(dcgan.main, ["--dataset", name, "--data-root", str(tmp_path / "nothing"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: ") and "could not be downloaded" in err[-1]
    assert "README" in err[-1]


def test_empty_folder_and_folder_without_classes(data_root, tmp_path, capsys):
    assert call(dcgan.main, ["--dataset", "folder", "--data-root", str(data_root / "empty"), *TINY]) == 2
    assert "no images" in capsys.readouterr().err
    assert call(dcgan.main, ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--conditional",
                             *TINY]) == 2
    assert "class subfolders" in capsys.readouterr().err
    assert call(dcgan.main, ["--dataset", "folder", "--data-root", str(tmp_path / "nope"), *TINY]) == 2


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "imagenet"], "invalid choice"),
    (["--image-size", "48"], "--image-size must be 32 or 64"),
    (["--epochs", "0"], "must be > 0"),
    (["--lr", "-1"], "'-1' must be > 0"),
    (["--batch-size", "1000"], "fewer than one batch"),
])
def test_bad_flags(data_root, argv, words, capsys):
    code = call(dcgan.main, ["--data-root", str(data_root), *TINY, *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_device_choice(monkeypatch):
    """auto: cuda where PyTorch sees a GPU, else Apple MPS, else the CPU; a device asked for by name that is not
    there: one line. (The availability checks are stood in for: this machine has neither GPU.)"""
    assert common.get_device("cpu").type == "cpu"
    for cuda, mps, picked in ((True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        assert common.get_device("auto").type == picked
    with pytest.raises(common.UserError, match="--device cuda: no CUDA GPU"):
        common.get_device("cuda")
    with pytest.raises(common.UserError, match="--device mps: Apple MPS is not available"):
        common.get_device("mps")


@pytest.mark.parametrize("script", SCRIPTS, ids=[m.__name__ for m in SCRIPTS])
def test_every_script_picks_deterministic_convolutions(script, data_root, monkeypatch):
    """Same seed, same weights on a GPU too: cuDNN's default kernels are not (measured on an H200: two runs of one
    seed drifted apart), so each script's main() turns on its deterministic ones, before any model is built."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    seen = []
    monkeypatch.setattr(script, "Generator", lambda **kw: seen.append(torch.backends.cudnn.deterministic) or stop())
    with pytest.raises(StopIteration):
        script.main(["--data-root", str(data_root), *TINY])
    assert seen == [True]


def stop():
    raise StopIteration


def same_weights(a, b):
    return all(torch.equal(a[n][k], b[n][k]) for n in ("G", "D") for k in a[n])


@pytest.mark.parametrize("workers", [0, 2])
def test_data_loading_leaves_the_rng_alone(data_root, workers):
    """Decoding (cold cache) and reading the cache (warm) draw nothing from the global RNG, so the models'
    initialisation and noise do not depend on them."""
    state = torch.get_rng_state()
    for _ in range(2):  # cold, then warm
        common.load_dataset("folder", data_root / "flat", 32, workers=workers)
    assert torch.equal(state, torch.get_rng_state())


def test_same_seed_cold_or_warm_cache_gives_the_same_weights(data_root, tmp_path):
    argv = ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--image-size", "32", *TINY[:-4],
            "--workers", "2", "--device", "cpu", "--epochs", "2"]
    assert call(dcgan.main, argv + ["--name", "cold"]) == 0  # decodes the folder
    assert call(dcgan.main, argv + ["--name", "warm"]) == 0  # reads the cache
    a, b = (torch.load(tmp_path / f"models/{n}/last.pt", weights_only=True) for n in ("cold", "warm"))
    assert same_weights(a, b)


def test_killed_and_resumed_from_a_cold_cache_equals_a_straight_run(data_root, tmp_path, monkeypatch):
    """As a user meets it: a real process starts on a folder never seen (cold cache), is killed with SIGKILL while it
    trains and saves, and is resumed from the last.pt it left (which loads: the kill may land between an epoch's file
    and last.pt, never inside one); a straight run of as many epochs, which finds the cache warm, gives the same
    weights."""
    folder = ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--image-size", "32", *TINY[:-4],
              "--workers", "2", "--device", "cpu"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache_killed"),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    p = subprocess.Popen([sys.executable, str(ROOT / "dcgan.py"), *folder, "--epochs", "1000", "--name", "killed"],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "models/killed/epoch_003.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    epochs = str(common.load_checkpoint(tmp_path / "models/killed/last.pt")["epoch"] + 2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache_killed"))  # warm now
    assert call(dcgan.main, folder + ["--epochs", epochs, "--name", "killed", "--resume"]) == 0
    assert call(dcgan.main, folder + ["--epochs", epochs, "--name", "straight"]) == 0
    a, b = (torch.load(tmp_path / f"models/{n}/last.pt", weights_only=True) for n in ("killed", "straight"))
    assert a["epoch"] == b["epoch"] == int(epochs)
    assert same_weights(a, b)


def unreadable_folder(root, good):
    """`good` readable PNGs, and three files with image names that are not images: a JPEG cut short (a download
    that stopped), a text file named .png, an empty .jpeg."""
    write_images(root, good, (36, 36), 11)
    jpg = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(jpg, format="JPEG")
    (root / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (root / "notes.png").write_text("not an image, despite its name")
    (root / "empty.jpeg").write_bytes(b"")


def test_unreadable_files_in_a_folder_are_skipped_with_one_warning(tmp_path, capsys):
    root = tmp_path / "scrape"
    root.mkdir()
    unreadable_folder(root, good=6)
    argv = ["--dataset", "folder", "--data-root", str(root), "--image-size", "32", "--width", "8", "--batch-size",
            "2", "--workers", "2", "--device", "cpu", "--epochs", "1"]
    assert call(dcgan.main, argv) == 0
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning")]
    assert len(err) == 1 and "skipping 3 unreadable files of 9" in err[0]
    assert all(n in err[0] for n in ("truncated.jpg", "notes.png", "empty.jpeg"))
    assert common.load_checkpoint(tmp_path / "models/dcgan_folder/last.pt")["step"] == 3  # 6 images / 2
    assert call(dcgan.main, argv + ["--name", "again"]) == 0  # from the cache: the same warning, not a silent skip
    assert "skipping 3 unreadable files" in capsys.readouterr().err


def test_a_folder_of_unreadable_files_stops_in_one_line(tmp_path, capsys):
    root = tmp_path / "broken"
    root.mkdir()
    unreadable_folder(root, good=0)
    code = call(dcgan.main, ["--dataset", "folder", "--data-root", str(root), *TINY])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the decoding pass's progress bar
    assert code == 1 and last.startswith("error: none of the 3 image files") and "Traceback" not in err


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
