"""Shared plumbing for the ganzoo scripts: arguments, device, seeding, data, batching, grids, checkpoints, logging.

Nothing here is a model or a loss: what a reader came to learn stays in the architecture file.
The one object a training script talks to is `Run` (at the bottom): it refuses or resumes a run, yields
batches, logs, samples the fixed-noise grid and writes checkpoints, so the script's loop stays

    for real, labels in run.batches():
        run.log(train_step(...))
"""
import argparse
import gc
import gzip
import hashlib
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CKPT_FORMAT, CKPT_VERSION = "ganzoo-checkpoint", 1
DATASETS = ("mnist", "fashion-mnist", "cifar10", "folder")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RAM_BUDGET = 4 * 2**30  # bytes: a dataset whose uint8 tensor fits is decoded once and batched from memory
LOG_EVERY = 25  # steps between reads of the logged figures (each read waits for a GPU to catch up)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class UserError(Exception):
    """A mistake the user can fix: printed as one line, no traceback. code 2 = usage error."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def cli(main):
    """Run main() and turn user errors into one line on stderr and a non-zero exit."""
    try:
        main()
        if _joined():
            # free DDP's wrappers (they can sit in reference cycles) while the process group lives: torn down after
            # it, at exit, they can abort the process (std::terminate; seen in tests/test_distributed.py's workers)
            gc.collect()
            torch.distributed.destroy_process_group()
    except UserError as e:
        if rank() > 0:  # under torchrun every process meets the same error: rank 0 says it
            sys.exit(e.code)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print("interrupted: checkpoints already written are intact (continue with --resume)", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------------------------------------- arguments
def positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{s!r} must be > 0")
    return v


def positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number")
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{s!r} must be a positive number")
    return v


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows '(default: X)' where there is a value to show and the help text does not already say it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def arg_parser(doc, *, lr, batch_size, latent_dim=100, epochs=25):
    """The command-line contract every training script shares; each script passes its paper's defaults."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="training data")
    p.add_argument("--data-root", default="data", help="where the dataset lives (or is downloaded to); "
                   "for --dataset folder: the image folder itself")
    p.add_argument("--image-size", type=int, default=None, help="32 or 64 (default: 32 for mnist, fashion-mnist "
                   "and cifar10, 64 for folder)")
    p.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps in all "
                   "(smoke runs); a checkpoint is written where it stops")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=positive_float, default=lr, help="learning rate")
    p.add_argument("--latent-dim", type=positive_int, default=latent_dim, help="size of z")
    p.add_argument("--conditional", action="store_true", help="class-conditional: G and D both get the label")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, noise, data order)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="auto: cuda, then mps, then cpu")
    p.add_argument("--out", default=".", help="root for models/, results/ and runs/")
    p.add_argument("--name", default=None, help="run name (default <arch>_<dataset>, _cond when conditional)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue the run from its last checkpoint, or from the checkpoint given")
    p.add_argument("--sample-every", type=int, default=0, metavar="N", help="also save a grid every N steps (0: off)")
    p.add_argument("--tensorboard", action="store_true", help="also log to <out>/runs/<name> (needs tensorboard)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (decoding folders, streaming)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast in G's and D's forward passes: faster on "
                   "CUDA and on CPUs with AVX-512 BF16 or AMX; the losses stay float32")
    return p


def finish_args(parser, argv, arch):
    """Parse, fill the defaults that depend on other flags, and reject values argparse cannot check alone."""
    args = parser.parse_args(argv)
    args.arch = arch
    if args.image_size is None:
        args.image_size = 64 if args.dataset == "folder" else 32
    if args.image_size not in (32, 64):
        parser.error(f"--image-size must be 32 or 64, not {args.image_size}")
    if args.workers < 0 or args.sample_every < 0:
        parser.error("--workers and --sample-every must be >= 0")
    if args.name is None:
        args.name = f"{arch}_{args.dataset.replace('-', '_')}" + ("_cond" if args.conditional else "")
    if not args.name or os.sep in args.name or args.name.startswith("."):
        parser.error(f"--name {args.name!r} must be a plain folder name")
    if args.resume:
        _resume_args(args)
    return args


RESUMABLE = ("epochs", "max_steps", "device", "workers", "tensorboard", "sample_every", "out", "resume")


def _resume_args(args):
    """--resume: the run's settings come from its checkpoint (so G and D are rebuilt the same); only the
    run-control flags in RESUMABLE may change."""
    path = Path(args.out) / "models" / args.name / "last.pt" if args.resume is True else Path(args.resume)
    if not path.exists():
        raise UserError(f"--resume: no checkpoint at {path} (start the run without --resume, or give its path)", 2)
    ck = load_checkpoint(path)
    if ck["arch"] != args.arch:
        raise UserError(f"--resume: {path} was written by {ck['arch']}.py, not {args.arch}.py", 2)
    for k, v in ck["args"].items():
        if k not in RESUMABLE:
            setattr(args, k, v)
    args.resume = str(path)


# ------------------------------------------------------------------------------------------------------ device, seeds
def get_device(name="auto"):
    """The device this process trains on. Under torchrun (WORLD_SIZE > 1 in the environment) it also joins the
    process group: nccl on cuda:LOCAL_RANK, gloo on the CPU."""
    device = _pick_device(name)
    if world_size() > 1:
        device = init_distributed(device)
    return device


def _pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device auto or cpu)", 2)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple MPS is not available here (use --device auto or cpu)", 2)
    return torch.device(name)


def device_name(device):
    """What a result was measured on, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: Intel Xeon ... (2 threads)'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    model = ""
    try:
        model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    except OSError:
        import platform
        model = platform.processor()
    return f"cpu: {model or 'unknown'} ({torch.get_num_threads()} threads)"


def seed_everything(seed):
    # + rank: under torchrun each process draws its own z (the same z on every process would repeat each fake image
    # world_size times in the global batch); the weights still start equal, as DDP copies rank 0's to the others
    torch.manual_seed(seed + rank())  # also seeds every CUDA device


def rng_state():
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------------ distributed
def _joined():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size():
    """Processes in this run: the process group's size once joined, else torchrun's WORLD_SIZE, else 1."""
    return torch.distributed.get_world_size() if _joined() else int(os.environ.get("WORLD_SIZE", "1"))


def rank():
    return torch.distributed.get_rank() if _joined() else 0


def init_distributed(device):
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from its environment)."""
    import torch.distributed as dist
    if device.type == "mps":
        raise UserError("torchrun: several processes train on CUDA GPUs (nccl) or the CPU (gloo), not on MPS", 2)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


class AllReduceSum(torch.autograd.Function):
    """The sum over the processes. Each process's loss depends on every process's input through it, so its gradient
    is the sum over the processes of their gradients (as in torch's SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        torch.distributed.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def sync_batchnorm(model, device):
    """Under torchrun, BatchNorm normalises with the statistics of the whole global batch, as one process does, so
    that N processes compute the gradient of the same loss as one. CUDA: torch's SyncBatchNorm; the CPU (which it
    does not support): the same computation, two differentiable all-reduces per layer. Same state_dict either way."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            def forward(x, bn=bn):
                if not bn.training:
                    return type(bn).forward(bn, x)
                dims, n = [0, 2, 3], x.numel() // x.size(1) * world_size()  # every process has an equal share
                mean = AllReduceSum.apply(x.sum(dims)) / n  # (C,)
                centred = x - mean[None, :, None, None]
                var = AllReduceSum.apply((centred * centred).sum(dims)) / n  # biased, as BatchNorm normalises with
                with torch.no_grad():  # the running statistics take the unbiased variance, as BatchNorm's do
                    bn.num_batches_tracked += 1
                    m = bn.momentum if bn.momentum is not None else 1 / float(bn.num_batches_tracked)
                    bn.running_mean.mul_(1 - m).add_(m * mean)
                    bn.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
                y = centred * torch.rsqrt(var + bn.eps)[None, :, None, None]
                return y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None] if bn.affine else y
            bn.forward = forward
    return model


# ------------------------------------------------------------------------------------------------------------ speed
CHANNELS_LAST = True  # convolutions in NHWC on CPU and CUDA: faster for every conv script (benchmarks/speed.py)


def fast_dropout(module):
    """nn.Dropout's forward with its keep-mask drawn as uniform >= p: the same Bernoulli(1 - p) mask and 1/(1 - p)
    scale, but torch.rand is several times faster on the CPU than the bernoulli_ that F.dropout calls there
    (pytorch/pytorch#138199; torch.compile's inductor draws dropout masks this way too). The MLP GAN's three
    dropout layers' bernoulli_ was a quarter of its step on the CPU (torch.profiler). Eval mode: identity."""
    p = module.p

    def forward(x):
        if not module.training:
            return x
        keep = torch.rand_like(x, dtype=torch.float32) >= p  # float32 draws even under --amp: P(keep) = 1 - p
        return x * (keep.to(x.dtype) * (1 / (1 - p)))
    return forward


def cpu_has_bf16():
    """True where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX); None where it cannot be told."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def speed_up(model, args, device):
    """In place, so the script's G and D (and their optimizers) stay the same objects: convolutional nets go to
    channels_last, dropout on the CPU draws its mask as uniform >= p (fast_dropout), and with --amp their forward
    passes run under bfloat16 autocast and return float32, so that every loss (and the gradient penalty's norm) is
    computed in float32. -> the memory format of input batches."""
    convolutional = any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())
    layout = torch.contiguous_format
    if CHANNELS_LAST and convolutional and device.type in ("cpu", "cuda"):
        model.to(memory_format=torch.channels_last)
        layout = torch.channels_last
    if device.type == "cpu":
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout) and 0 < m.p < 1 and not m.inplace:
                m.forward = fast_dropout(m)
    if args.amp:
        forward = model.forward

        def autocast_forward(*a, **k):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return forward(*a, **k).float()
        model.forward = autocast_forward
    return layout


# ------------------------------------------------------------------------------------------------------------- data
@dataclass
class Data:
    """A dataset as the scripts see it. `images` is a uint8 (N, C, S, S) tensor at training size when it fits
    in RAM, else None and `stream` is a torch Dataset yielding (uint8 image, label). `native_size` and `mapping`
    ('pad', 'resize' or 'none') say how the files' images became S x S, so samples can be mapped back exactly."""
    name: str
    channels: int
    image_size: int
    native_size: int
    mapping: str
    classes: list
    labels: torch.Tensor
    images: torch.Tensor = None
    stream: object = None
    source: str = ""

    def __len__(self):
        return len(self.labels)


def to_training_size(x, size):
    """uint8 (N, C, s, s) -> (N, C, size, size). 28 -> 32 pads 2 black pixels a side (exactly invertible: MNIST
    digits sit on a black background with a 4-pixel margin already); any other change of size is a bilinear
    antialiased resize. Returns the images and the name of the mapping."""
    s = x.shape[-1]
    if s == size:
        return x, "none"
    if s == 28 and size == 32:
        return F.pad(x, (2, 2, 2, 2)), "pad"
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8), "resize"


def to_native_size(x, native_size, mapping):
    """Exact inverse of to_training_size for 'pad' and 'none', the matching resize for 'resize'. x: float or uint8."""
    if mapping == "none":
        return x
    if mapping == "pad":
        p = (x.shape[-1] - native_size) // 2
        return x[..., p:p + native_size, p:p + native_size]
    y = F.interpolate(x.float(), size=(native_size, native_size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y


def load_dataset(name, root, image_size, split="train", conditional=False, ram_budget=None, workers=2):
    """Load a dataset by name (see DATASETS). split: 'train' or 'test'."""
    ram_budget = RAM_BUDGET if ram_budget is None else ram_budget
    root = Path(root)
    if name in ("mnist", "fashion-mnist"):
        images, labels, classes, source = _load_idx(name, root, split)
        images = images.unsqueeze(1)  # (N, 1, 28, 28)
    elif name == "cifar10":
        folder = next((r / split for r in (root, root / "cifar10-jpg") if _has_class_dirs(r / split)), None)
        if folder is not None:  # an image-folder copy, e.g. the JPEG export laid out by ../shared/data/unpack.sh
            return _load_folder(folder, 32 if image_size is None else image_size, conditional, ram_budget, workers,
                                name="cifar10", native=32)
        images, labels, classes, source = _load_cifar10(root, split)
    elif name == "folder":
        if split != "train":
            raise UserError("--dataset folder has no test split: give the reference folder itself", 2)
        return _load_folder(root, 64 if image_size is None else image_size, conditional, ram_budget, workers)
    else:
        raise UserError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}", 2)
    native = images.shape[-1]
    images, mapping = to_training_size(images, image_size or native)
    return Data(name, images.shape[1], images.shape[-1], native, mapping, classes, labels, images=images,
                source=source)


def _load_idx(name, root, split):
    import torchvision.datasets as tvd
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    train = split == "train"
    try:
        ds = cls(root, train=train, download=False)
    except RuntimeError:
        raw = root / cls.__name__ / "raw"
        if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir():
            _unpack_debian_fashion_mnist(raw)  # Debian's dataset-fashion-mnist: no download needed
        else:
            _download(lambda: cls(root, train=train, download=True), name, raw,
                      "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                      f"t10k-labels-idx1-ubyte (uncompressed) in {raw}"
                      + (" or apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else ""))
        ds = cls(root, train=train, download=False)
    classes = [c.split(" - ")[0] for c in ds.classes]  # MNIST's '0 - zero' -> '0'
    return ds.data, ds.targets.long(), classes, str(root / cls.__name__)


def _unpack_debian_fashion_mnist(raw):
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for gz in sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")):
            dst = raw / gz.name[:-3]
            if not dst.exists():
                with gzip.open(gz, "rb") as f, open(f"{dst}.tmp", "wb") as out:
                    shutil.copyfileobj(f, out)
                os.replace(f"{dst}.tmp", dst)
    except OSError as e:
        raise UserError(f"cannot unpack Debian's Fashion-MNIST into {raw}: {e}")


def _load_cifar10(root, split):
    import torchvision.datasets as tvd
    train = split == "train"
    try:
        ds = tvd.CIFAR10(root, train=train, download=False)
    except RuntimeError:
        _download(lambda: tvd.CIFAR10(root, train=train, download=True), "cifar10", root / "cifar-10-batches-py",
                  f"cifar-10-python.tar.gz in {root}, or an image folder {root / split}/<class>/*.png")
        ds = tvd.CIFAR10(root, train=train, download=False)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return images, torch.tensor(ds.targets), list(ds.classes), str(root / "cifar-10-batches-py")


def _download(fn, name, where, what_to_put):
    print(f"{name}: not found under {where}; downloading...", file=sys.stderr)
    try:
        fn()
    except Exception as e:  # torchvision raises several kinds (URLError, RuntimeError, OSError) when offline
        raise UserError(f"{name} is missing and could not be downloaded ({type(e).__name__}): put {what_to_put} "
                        "(the README's Data section lists the layouts)") from None


def _has_class_dirs(path):
    return path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


def _list_images(root):
    """Files of a folder; class subfolders (any depth below them) become labels when present."""
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist", 2)
    top = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes, files, labels = [], list(top), [-1] * len(top)
    for d in dirs:
        found = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if found:
            labels += [len(classes)] * len(found)
            files += found
            classes.append(d.name)
    if not files:
        raise UserError(f"no images ({', '.join(IMG_EXTENSIONS)}) in {root}", 2)
    if classes and top:
        classes, labels = [], [-1] * len(files)  # loose files beside class folders: treat all as unlabelled
    return files, torch.tensor(labels), classes


class ImageFiles(torch.utils.data.Dataset):
    """Decode, resize the short side and center-crop to size x size, as uint8 (C, size, size).
    check=True: an unreadable file (truncated, or not an image despite its name) gives a black image and
    ok=False instead of raising, so one pass can find them all: items are then (image, ok)."""

    def __init__(self, files, labels, size, channels, check=False):
        self.files, self.labels, self.size, self.mode = files, labels, size, "L" if channels == 1 else "RGB"
        self.check = check

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        import torchvision.transforms.v2.functional as TF
        try:
            with Image.open(self.files[i]) as im:
                x = TF.pil_to_tensor(im.convert(self.mode))
        except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError... by format
            if not self.check:
                raise
            return torch.zeros(3 if self.mode == "RGB" else 1, self.size, self.size, dtype=torch.uint8), False
        x = TF.center_crop(TF.resize(x, self.size, antialias=True), [self.size, self.size])
        return (x, True) if self.check else (x, self.labels[i])


def loader(ds, workers, **kw):
    """A DataLoader that leaves the global RNG alone: its workers' base seed comes from a private generator,
    so the weights and noise of a run do not depend on whether (or how often) data went through a loader."""
    return torch.utils.data.DataLoader(ds, num_workers=workers, generator=torch.Generator().manual_seed(0), **kw)


def _load_folder(root, size, conditional, ram_budget, workers, name="folder", native=None):
    files, labels, classes = _list_images(Path(root))
    if conditional and not classes:
        raise UserError(f"--conditional needs class subfolders in {root} (e.g. {root}/cat/*.jpg)", 2)
    ds = ImageFiles(files, labels, size, 3)
    in_ram = len(files) * 3 * size * size <= ram_budget
    images, ok = _decode_cached(ds, root, workers, keep_images=in_ram)
    if not ok.all():  # skip unreadable files: real folders (web scrapes, COCO copies) have a few
        bad = [str(files[i]) for i in torch.nonzero(~ok).flatten().tolist()]
        if len(bad) == len(files):
            raise UserError(f"none of the {len(files)} image files in {root} can be read (e.g. {bad[0]})")
        print(f"warning: skipping {len(bad)} unreadable file{'s' * (len(bad) > 1)} of {len(files)} in {root}: "
              + ", ".join(Path(b).name for b in bad[:3]) + (", ..." if len(bad) > 3 else ""), file=sys.stderr)
        ds.files, ds.labels = [f for f, k in zip(files, ok.tolist()) if k], labels[ok]
    mapping = "none" if native in (None, size) else "resize"
    common = dict(channels=3, image_size=size, native_size=native or size, mapping=mapping, classes=classes,
                  labels=ds.labels, source=str(root))
    return Data(name, images=images, **common) if in_ram else Data(name, stream=ds, **common)


def cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ganzoo"


def _decode_cached(ds, root, workers, keep_images=True):
    """Decode a folder once and cache what was found, keyed by its files, sizes, mtimes and the target size:
    -> (uint8 images of the readable files, or None when not keep_images; bool mask of readable files).
    A folder too big for RAM is still decoded once, to find its unreadable files before training starts."""
    h = hashlib.sha1(f"{Path(root).resolve()}|{ds.size}|{ds.mode}|{keep_images}".encode())
    for f in ds.files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    path = cache_dir() / f"folder-{h.hexdigest()[:16]}.pt"
    if path.exists():
        try:
            c = torch.load(path, weights_only=True)
            return c["images"], c["ok"]
        except Exception:
            pass  # unreadable or older cache: decode again
    from tqdm import tqdm
    check = ImageFiles(ds.files, ds.labels, ds.size, 3 if ds.mode == "RGB" else 1, check=True)
    parts, ok = [], []
    for x, k in tqdm(loader(check, workers, batch_size=256), desc=f"decoding {root} (once)", unit="batch"):
        parts += [x[k]] if keep_images else []
        ok.append(k)
    images, ok = (torch.cat(parts) if keep_images else None), torch.cat(ok)
    try:
        atomic_save({"images": images, "ok": ok}, path)
    except OSError as e:
        print(f"warning: could not cache decoded images in {path}: {e}", file=sys.stderr)
    return images, ok


def normalize(x_uint8):
    return x_uint8.float().div_(127.5).sub_(1.0)  # [0, 255] -> [-1, 1], G's Tanh range


def to_uint8(x):
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def epoch_order(n, seed, epoch):
    """The data order of one epoch, a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


# ----------------------------------------------------------------------------------------------------- grids, GIFs
def save_grid(images, path, nrow=8, row_labels=None, title=None):
    """images in [-1, 1]; row_labels: one string per row, drawn in a left margin; title drawn on top."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid
    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=2, normalize=True,
                     value_range=(-1, 1), pad_value=1.0)
    grid = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    scale = -(-400 // grid.width)  # small grids (28-32 px images) are upscaled to >= 400 px wide, to be readable
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST) if scale > 1 else grid
    left = 8 + 7 * max((len(s) for s in row_labels), default=0) if row_labels else 0
    top = 14 if title else 0
    canvas = Image.new("RGB", (grid.width + left, grid.height + top), "white")
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + 2, 1), title, fill="black")
    if row_labels:
        row_h = grid.height / math.ceil(len(images) / nrow)
        for i, s in enumerate(row_labels):
            draw.text((3, top + row_h * (i + 0.5) - 5), s, fill="black")
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))
    return path


def save_gif(frames, path, ms=500):
    from PIL import Image
    imgs = [Image.open(f).convert("RGB") for f in frames]
    if imgs:
        size = imgs[-1].size
        imgs = [im if im.size == size else im.resize(size) for im in imgs]
        atomic_write(path, lambda tmp: imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                                                    duration=ms, loop=0))


def plot_losses(csv_path, png_path):
    """losses.csv -> losses.png: one panel per group of figures: the losses (loss_*), then each other prefix
    (wasserstein_*), then the rest (D(x), D(G(z))). A column's empty cells (steps that did not compute it) are
    left out of its curve."""
    import csv
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(csv_path) as f:
        rows = list(csv.reader(f))
    if len(rows) < 3:
        return
    names, cols = rows[0], np.array([[float(v) if v else np.nan for v in r] for r in rows[1:]]).T
    groups = {}
    for name in names[2:]:
        groups.setdefault(name.split("_")[0] if "_" in name and "(" not in name else "", []).append(name)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2 + 2 * len(groups)), sharex=True, squeeze=False)
    k = max(1, cols.shape[1] // 200)  # moving average over ~0.5% of the run, so trends show through GAN noise
    for ax, group in zip(axes[:, 0], groups.values()):
        for name in group:
            y = cols[names.index(name)]
            x, y = cols[0][np.isfinite(y)], y[np.isfinite(y)]
            if not len(y):  # not computed yet (a smoke run shorter than n_critic steps)
                continue
            kk = max(1, round(k * len(y) / cols.shape[1]))  # a sparser column (WGAN's loss_g): the same span
            ax.plot(x[kk - 1:], np.convolve(y, np.ones(kk) / kk, mode="valid"), label=name, lw=1)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(f"step (moving average over ~{k} steps)")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------- checkpoints
def atomic_write(path, write):
    """write(tmp_path) then rename: a reader, or a run killed mid-write, never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path, map_location="cpu"):
    """Load a ganzoo checkpoint as plain data (weights_only=True: nothing in the file can run code)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}", 2)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "unpickl" in msg.lower():
            raise UserError(f"{path}: refused, it is not plain data (loading it would run code); "
                            "ganzoo checkpoints never need that") from None
        raise UserError(f"{path}: unreadable, truncated or not a PyTorch file ({type(e).__name__})") from None
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CKPT_FORMAT):
        raise UserError(f"{path}: not a ganzoo checkpoint (a file written by dcgan.py, wgan.py, ...)")
    if ckpt.get("version", 0) > CKPT_VERSION:
        raise UserError(f"{path}: checkpoint version {ckpt['version']} is newer than this ganzoo "
                        f"(reads {CKPT_VERSION}); update ganzoo")
    ckpt["path"] = str(path)
    return ckpt


# ------------------------------------------------------------------------------------------------------------- Run
class Run:
    """One training run: folders, resume, fixed noise, batches with a progress bar, logging, grids, checkpoints.

    models/<name>/epoch_NNN.pt and last.pt; results/<name>/epoch_NNN.png, progress.gif, losses.csv, losses.png;
    runs/<name>/ for TensorBoard."""

    def __init__(self, args, data, G, D, opt_G, opt_D, model_args, device, n_grid=64):
        self.args, self.data, self.G, self.D, self.opt_G, self.opt_D = args, data, G, D, opt_G, opt_D
        self.model_args, self.device = model_args, device
        self.models = Path(args.out) / "models" / args.name
        self.results = Path(args.out) / "results" / args.name
        self.epoch, self.step, self.stats, self.tb, self.bar = 0, 0, [], None, None
        self.names, self.shown, self.pending = [], {}, []  # losses.csv's columns; the progress bar's; not yet read
        self.seconds, self.t0 = 0.0, time.time()  # training wall time, summed over resumes
        if args.amp and device.type == "mps":
            raise UserError("--amp: bfloat16 autocast is not offered on Apple MPS here; run without --amp", 2)
        if args.amp and device.type == "cpu" and cpu_has_bf16() is False:
            print("warning: --amp: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): expect it to be slower, "
                  "not faster", file=sys.stderr)
        self.rank, self.world = rank(), world_size()
        if args.batch_size % self.world:
            fit = args.batch_size // self.world * self.world or self.world
            raise UserError(f"--batch-size {args.batch_size} is the global batch: it must split evenly over the "
                            f"{self.world} processes (try {fit})", 2)
        if self.world > 1:
            sync_batchnorm(G, device)
            sync_batchnorm(D, device)
        self.layout = speed_up(G, args, device)
        speed_up(D, args, device)
        self.classes = data.classes if args.conditional else []
        if self.classes:  # one row per class, one column per z: each column shows one z across classes
            cols = 10
            self.fixed_z = torch.randn(cols, args.latent_dim, generator=torch.Generator().manual_seed(args.seed))
            self.fixed_z = self.fixed_z.repeat(len(self.classes), 1)
            self.fixed_labels = torch.arange(len(self.classes)).repeat_interleave(cols)
        else:
            self.fixed_z = torch.randn(n_grid, args.latent_dim, generator=torch.Generator().manual_seed(args.seed))
            self.fixed_labels = None
        if args.resume:
            self._resume(args.resume)
        elif any(self.models.glob("*.pt")):
            raise UserError(f"{self.models} already holds checkpoints: add --resume to continue that run, "
                            "or --name NEW to start another", 2)
        if args.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard", 2) from None
            self.tb = SummaryWriter(str(Path(args.out) / "runs" / args.name)) if self.rank == 0 else None

    def parallel(self, G, D):
        """Under torchrun: G and D each in DistributedDataParallel, which averages their gradients over the processes
        in backward; one process: G and D themselves. Buffers are not broadcast: synchronised BatchNorm keeps them
        equal, and a broadcast between D's real and fake passes would modify tensors backward still needs."""
        if self.world == 1:
            return G, D
        import inspect
        from torch.nn.parallel import DistributedDataParallel as DDP
        kw = {"device_ids": [self.device.index] if self.device.type == "cuda" else None}
        new = "forward_sync_buffers" in inspect.signature(DDP).parameters  # torch >= 2.14's name for it
        kw["forward_sync_buffers" if new else "broadcast_buffers"] = False
        return DDP(G, **kw), DDP(D, **kw)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def state(self):
        a = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
        d = self.data
        return {"format": CKPT_FORMAT, "version": CKPT_VERSION, "arch": self.args.arch, "args": a,
                "model_args": dict(self.model_args), "epoch": self.epoch, "step": self.step,
                "G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "fixed_z": self.fixed_z, "fixed_labels": self.fixed_labels, "rng": rng_state(),
                "world_size": self.world, "rng_ranks": self._gather_rng(),
                "classes": list(d.classes), "image_shape": [d.channels, d.image_size, d.image_size],
                "data": {"dataset": d.name, "native_size": d.native_size, "mapping": d.mapping, "source": d.source},
                "train_seconds": self.seconds + time.time() - self.t0, "device": device_name(self.device),
                "torch_version": str(torch.__version__)}

    def _gather_rng(self):
        """Every process's RNG state (rank 0's is also "rng"), so a resume with as many processes is exact."""
        if self.world == 1:
            return []
        states = [None] * self.world
        torch.distributed.all_gather_object(states, rng_state())
        return states

    def save(self, epoch_file):
        state = self.state()  # on every process: it gathers their RNG states
        if self.rank > 0:
            return
        last = self.models / "last.pt"
        if epoch_file:
            epoch = self.models / f"epoch_{self.epoch:03d}.pt"
            atomic_save(state, epoch)
            try:  # last.pt is the same bytes: a second name for the file instead of writing (and syncing) it twice
                atomic_write(last, lambda tmp: os.link(epoch, tmp))
                return
            except OSError:  # a file system without hard links: write it
                pass
        atomic_save(state, last)

    def _resume(self, path):  # the arguments were already taken from it by finish_args
        ck = load_checkpoint(path, map_location=self.device)
        n = ck.get("world_size", 1)
        if n != self.world:
            how = "python <script>.py --resume" if n == 1 else f"torchrun --nproc_per_node={n} <script>.py --resume"
            raise UserError(f"{path} was trained by {n} process{'es' * (n > 1)} and this run has {self.world}: "
                            f"each process's data shard and random state are in it, so resume with {n} ({how})", 2)
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        self.opt_G.load_state_dict(ck["opt_G"])
        self.opt_D.load_state_dict(ck["opt_D"])
        self.epoch, self.step = ck["epoch"], ck["step"]
        self.seconds = ck.get("train_seconds", 0.0)
        self.fixed_z, self.fixed_labels = ck["fixed_z"].cpu(), ck["fixed_labels"]
        self.fixed_labels = None if self.fixed_labels is None else self.fixed_labels.cpu()
        rng = ck["rng_ranks"][self.rank] if self.world > 1 else ck["rng"]
        set_rng_state({k: (v.cpu() if torch.is_tensor(v) else [t.cpu() for t in v]) for k, v in rng.items()})
        if self.rank == 0:
            self._truncate_log()
            print(f"resuming {path} at epoch {self.epoch}, step {self.step}", file=sys.stderr)

    def _truncate_log(self):
        """Drop log rows written after the checkpoint (a run killed mid-epoch), so the curve has no repeats."""
        csv = self.results / "losses.csv"
        if csv.exists():
            lines = csv.read_text().splitlines(keepends=True)
            keep = lines[:1] + [l for l in lines[1:] if int(l.split(",", 1)[0]) <= self.step]
            atomic_write(csv, lambda tmp: Path(tmp).write_text("".join(keep)))

    # ------------------------------------------------------------------------------------------------ batches
    def steps_per_epoch(self):
        return len(self.data) // self.args.batch_size

    def batches(self):
        """Yield (real in [-1, 1] on the device, labels or None) until --epochs or --max-steps; checkpoint and
        sample at every epoch end."""
        from tqdm import tqdm
        a, n, per = self.args, len(self.data), self.steps_per_epoch()
        if per == 0:
            raise UserError(f"the dataset has {n} images, fewer than one batch of {a.batch_size}: "
                            "lower --batch-size", 2)
        images = None if self.data.images is None else self.data.images.to(self.device)
        labels = self.data.labels.to(self.device)
        self.t0, done = time.time(), False
        if self.epoch >= a.epochs and self.rank == 0:
            print(f"{self.models} has already trained {self.epoch} epochs: raise --epochs to go on", file=sys.stderr)
        while self.epoch < a.epochs and not done:
            first = self.step - self.epoch * per  # > 0 when resuming inside an epoch
            order = epoch_order(n, a.seed, self.epoch)[first * a.batch_size: per * a.batch_size]
            self.bar = tqdm(total=per, initial=first, desc=f"epoch {self.epoch + 1}/{a.epochs}", unit="step",
                            dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30,
                            disable=self.rank > 0)
            t0, seen = time.time(), 0
            for real, y in self._epoch_batches(images, labels, order):
                yield real, (y if a.conditional else None)
                self.step += 1
                seen += len(real) * self.world
                self.bar.update(1)
                if len(self.pending) >= LOG_EVERY:
                    self._read()
                    self.bar.set_postfix_str(self._postfix(seen / (time.time() - t0)), refresh=False)
                if a.sample_every and self.step % a.sample_every == 0:
                    self.sample(self.results / f"step_{self.step:07d}.png", f"step {self.step}")
                if a.max_steps and self.step >= a.max_steps:
                    done = True
                    break
            self.bar.close()
            whole = self.step == (self.epoch + 1) * per  # else --max-steps stopped inside the epoch
            self.epoch += whole
            self.checkpoint(whole)
        self.finish(time.time() - self.t0)

    def _epoch_batches(self, images, labels, order):
        B = self.args.batch_size // self.world
        if self.world > 1:  # this process's share of each global batch: DistributedSampler's (order[rank::world])
            order = order.view(-1, self.args.batch_size)[:, self.rank::self.world].reshape(-1)
        if images is not None:  # in RAM: index a permutation, normalise the batch on the device
            order = order.to(self.device)
            for i in range(0, len(order) - B + 1, B):
                idx = order[i:i + B]
                yield normalize(images[idx]).contiguous(memory_format=self.layout), labels[idx]
        else:  # too big for RAM: stream through a DataLoader in the same order
            batches = loader(self.data.stream, self.args.workers, batch_size=B, sampler=order.tolist(),
                             drop_last=True, pin_memory=self.device.type == "cuda")
            for x, y in batches:
                x = normalize(x.to(self.device, non_blocking=True)).contiguous(memory_format=self.layout)
                yield x, y.to(self.device)

    # ------------------------------------------------------------------------------------------------ logging
    def log(self, stats):
        """stats: {'loss/d': tensor or float, ...} for the step just taken; None for a figure this step did not
        compute (WGAN's loss/g on critic-only steps): an empty cell in losses.csv. The tensors are kept where they
        are, so a GPU never waits for the host here; they are read every LOG_EVERY steps and before every grid and
        checkpoint, and a NaN or inf found then stops the run, naming the step where it appeared."""
        self.names = self.names or list(stats)  # losses.csv's columns: the first step's keys
        self.pending.append((self.step + 1, self.epoch + 1, {k: v for k, v in stats.items() if v is not None}))

    def _read(self):
        """The pending figures to the host, in one transfer; the first NaN or inf stops the run (the rows before it
        are written to losses.csv, and nothing is saved from the diverged weights)."""
        if not self.pending:
            return
        values = [v for _, _, row in self.pending for v in row.values()]
        # the tensors, in one stack; under torchrun every figure, averaged over the processes: the global batch's,
        # equal on every process, so that all of them stop together
        idx = range(len(values)) if self.world > 1 else [i for i, v in enumerate(values) if torch.is_tensor(v)]
        if idx:
            stack = torch.stack([torch.as_tensor(values[i], dtype=torch.float32, device=self.device).detach()
                                 .reshape(()) for i in idx])
            if self.world > 1:
                torch.distributed.all_reduce(stack)
                stack /= self.world
            for i, v in zip(idx, stack.tolist()):
                values[i] = v
        values = iter(values)
        rows = [(step, epoch, {k: float(next(values)) for k in row}) for step, epoch, row in self.pending]
        self.pending = []
        for step, epoch, row in rows:
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            if bad:
                if self.bar is not None:
                    self.bar.close()
                self._write_log()
                raise UserError(f"{bad[0]} is {row[bad[0]]} at step {step} (epoch {epoch}): training diverged; the "
                                f"last good checkpoint is in {self.models} (try a lower --lr)")
            self.stats.append((step, epoch, row))
            if self.tb:
                for k, v in row.items():
                    self.tb.add_scalar(k, v, step)

    def _postfix(self, img_s):
        if self.stats:
            self.shown.update(self.stats[-1][2])  # a figure not computed this step shows its latest value
        short = {"loss/d": "loss_D", "loss/g": "loss_G", "loss/gp": "loss_GP", "wasserstein/estimate": "W"}
        return " ".join(f"{short.get(k, k)}={self.shown[k]:.3f}" for k in self.names if k in self.shown) + \
            f" img/s={img_s:.0f}"

    def _flush_log(self):
        self._read()
        self._write_log()

    def _write_log(self):
        if not self.stats or self.rank > 0:
            self.stats = []
            return
        csv = self.results / "losses.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        new = not csv.exists()
        with open(csv, "a") as f:
            if new:
                f.write(",".join(["step", "epoch"] + [n.replace("/", "_") for n in self.names]) + "\n")
            for step, epoch, row in self.stats:
                f.write(f"{step},{epoch}," + ",".join(f"{row[n]:.6g}" if n in row else "" for n in self.names)
                        + "\n")
        self.stats = []

    @torch.no_grad()
    def sample(self, path, title):
        """The fixed-noise grid, in eval mode (BatchNorm running statistics) so it does not depend on the batch."""
        self._read()  # a NaN stops the run before its grid is drawn
        if self.rank > 0:  # rank 0 draws it from its own G: a pass through the DDP wrapper would wait for the others
            return
        self.G.eval()
        y = None if self.fixed_labels is None else self.fixed_labels.to(self.device)
        fake = self.G(self.fixed_z.to(self.device), y)
        self.G.train()
        rows = [str(c) for c in self.classes] if self.classes else None
        save_grid(fake, path, nrow=10 if self.classes else 8, row_labels=rows, title=title)
        if self.tb:
            from torchvision.utils import make_grid
            self.tb.add_image("samples", make_grid(fake.cpu(), nrow=8, normalize=True, value_range=(-1, 1)), self.step)

    def checkpoint(self, epoch_end):
        """At an epoch's end: epoch_NNN.pt and .png, the GIF. Where --max-steps stops inside an epoch: last.pt holds
        the partial epoch, and the grid is step_NNNNNNN.png. Both: the log and its plot."""
        self._flush_log()
        self.save(epoch_file=epoch_end)
        if epoch_end:
            self.sample(self.results / f"epoch_{self.epoch:03d}.png", f"epoch {self.epoch}")
            if self.rank == 0:
                save_gif(sorted(self.results.glob("epoch_*.png")), self.results / "progress.gif")
        else:
            self.sample(self.results / f"step_{self.step:07d}.png", f"step {self.step}")
        if self.rank == 0:
            plot_losses(self.results / "losses.csv", self.results / "losses.png")

    def finish(self, seconds):
        self._flush_log()
        if self.world > 1:
            torch.distributed.barrier()  # no process leaves while another may still need it
        if self.tb:
            self.tb.close()
        if self.rank > 0:
            return
        grids = sorted(self.results.glob("epoch_*.png")) or sorted(self.results.glob("step_*.png"))
        resumed = f" this time, {self.seconds + seconds:.0f} s in all" if self.seconds > 1 else ""
        print(f"done: {self.step} steps, epoch {self.epoch}, {seconds:.0f} s{resumed}\n"
              f"  checkpoints  {self.models}/ (last.pt)\n"
              f"  samples      {grids[-1] if grids else self.results}"
              + (", progress.gif" if (self.results / "progress.gif").exists() else "") + "\n"
              f"  losses       {self.results}/losses.csv, losses.png"
              + (f"\n  tensorboard  {Path(self.args.out) / 'runs' / self.args.name}" if self.tb else ""))
