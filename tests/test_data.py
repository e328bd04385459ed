"""common.py's data layer: every dataset path, the size mappings, the decode cache, streaming, offline errors."""
import pytest
import torch

import common
import dcgan
from conftest import TINY, call


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


def test_fashion_mnist_from_the_debian_package(tmp_path):
    d = common.load_dataset("fashion-mnist", tmp_path / "d", 32, split="test")
    assert d.images.shape == (32, 1, 32, 32) and d.classes[0] == "T-shirt/top"
    assert (tmp_path / "d/FashionMNIST/raw/t10k-images-idx3-ubyte").exists()


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


def test_streaming_when_the_folder_is_over_the_ram_budget(data_root, tmp_path, monkeypatch):
    d = common.load_dataset("folder", data_root / "flat", 32, ram_budget=0, workers=0)
    assert d.images is None and len(d.stream) == 16
    x, y = d.stream[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    monkeypatch.setattr(common, "RAM_BUDGET", 0)
    argv = ["--dataset", "folder", "--data-root", str(data_root / "flat"), "--image-size", "32", *TINY,
            "--epochs", "2"]
    assert call(dcgan.main, argv) == 0
    assert (tmp_path / "models/dcgan_folder/epoch_002.pt").exists()


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
    (["--lr", "-1"], "positive"),
    (["--batch-size", "1000"], "fewer than one batch"),
])
def test_bad_flags(data_root, argv, words, capsys):
    code = call(dcgan.main, ["--data-root", str(data_root), *TINY, *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err


def test_device_choice(capsys):
    assert common.get_device("cpu").type == "cpu"
    assert common.get_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(common.UserError, match="no CUDA GPU"):
            common.get_device("cuda")
