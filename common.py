"""Shared plumbing for the ganzoo scripts: arguments, device, seeding, data, grids, checkpoints, logging.

Nothing here is a model or a loss: what a reader came to learn stays in the architecture file. The one object a
training script talks to is `Run` (at the bottom): it refuses or resumes a run, yields batches, logs, samples the
fixed-noise grid and writes checkpoints, so that the script's loop stays

    for real, labels in run.batches():
        run.log(train_step(...))

Several processes (torchrun) are parallel.py's business; a run in one process never imports it.
"""
import argparse
import dataclasses
import gzip
import hashlib
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CKPT_FORMAT, CKPT_VERSION = "ganzoo-checkpoint", 1
DATASETS = ("mnist", "fashion-mnist", "cifar10", "folder")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RAM_BUDGET = 4 * 2**30  # bytes: a dataset whose uint8 tensor fits is decoded once and batched from memory
LOG_EVERY = 25  # steps between reads of the logged figures (each read waits for a GPU to catch up)
CHANNELS_LAST = True  # convolutions in NHWC on CPU and CUDA: the same maths, faster (docs/speed.md)
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
        if world()[1] > 1:
            import parallel
            parallel.close()
    except UserError as e:
        if world()[0] == 0:  # under torchrun every process meets the same error: rank 0 says it
            print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print("interrupted: checkpoints already written are intact (continue with --resume)", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------------------------------------- arguments
def positive(kind):
    """An argparse type: a number of this kind (int or float), finite and > 0."""
    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not {'an integer' if kind is int else 'a number'}")
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{s!r} must be > 0")
        return v
    return parse


positive_int, positive_float = positive(int), positive(float)


def arg_parser(doc, *, lr, batch_size, d_steps, latent_dim=100, epochs=25):
    """The command line every training script shares; each script passes its paper's defaults."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="training data")
    p.add_argument("--data-root", default="data", help="where the dataset lives (or is downloaded to); "
                   "for --dataset folder: the image folder itself")
    p.add_argument("--image-size", type=int, default=None, help="32 or 64; None: 32 for mnist, fashion-mnist and "
                   "cifar10, 64 for folder")
    p.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps in all "
                   "(smoke runs); a checkpoint is written where it stops")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=positive_float, default=lr, help="learning rate")
    p.add_argument("--latent-dim", type=positive_int, default=latent_dim, help="size of z")
    p.add_argument("--d-steps", type=positive_int, default=d_steps, help="D updates per G update: k in the GAN "
                   "paper's Algorithm 1, n_critic in the WGANs', n_dis in SNGAN's")
    p.add_argument("--conditional", action="store_true", help="class-conditional: G and D both get the label")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, noise, data order)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                   help="auto: cuda, then mps, then cpu")
    p.add_argument("--out", default=".", help="root for models/, results/ and runs/")
    p.add_argument("--name", default=None, help="run name; None: <arch>_<dataset>, _cond when conditional")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue the run from its last checkpoint, or from the checkpoint given")
    p.add_argument("--sample-every", type=int, default=0, metavar="N", help="also save a grid every N steps (0: off)")
    p.add_argument("--tensorboard", action="store_true", help="also log to <out>/runs/<name> (needs tensorboard)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (decoding folders, streaming)")
    p.add_argument("--amp", action="store_true", help="G's and D's forward passes in bfloat16 (autocast): faster on "
                   "CPUs with AVX-512 BF16 or AMX, 10-20x slower on an AVX2-only CPU, slower on an H200 for these "
                   "small networks; the losses stay float32")
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
    """The device this process trains on. Under torchrun (WORLD_SIZE > 1) it also joins the process group."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch (use --device auto or cpu)", 2)
    if name == "cuda":
        # same seed, same weights: cuDNN's default convolution kernels add in a varying order, and a GAN amplifies
        # the difference (two DCGAN runs of one seed on an H200 differed by up to 1.7 in a weight after 300 steps)
        torch.backends.cudnn.deterministic = True
    if name == "mps" and not mps:
        raise UserError("--device mps: Apple MPS is not available here (use --device auto or cpu)", 2)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import parallel
        return parallel.init(torch.device(name))
    return torch.device(name)


def world():
    """(this process's rank, the number of processes): (0, 1) unless torchrun started several."""
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if joined else (0, 1)


def device_name(device):
    """What a result was measured on, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: AMD EPYC (2 threads, AVX512)'. A
    CPU's vector instructions are named because a cloud CPU's name may not tell its generation: two 'AMD EPYC' with
    AVX2 and AVX-512 differ in speed and, as their kernels sum in another order, in where a GAN's training goes."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    model = _cpuinfo("model name")
    return f"cpu: {model or 'unknown'} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def cpu_bf16():
    """Whether this CPU does bfloat16 arithmetic natively (AVX-512 BF16 or AMX); None where /proc/cpuinfo does not say
    (not Linux). Without it, --amp's bfloat16 is emulated: correct, but many times slower than float32."""
    flags = _cpuinfo("flags")
    return None if flags is None else "bf16" in flags


def _cpuinfo(field):
    try:
        return next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith(field)), None)
    except OSError:
        return None


def seed_everything(seed):
    # + rank: under torchrun each process draws its own z (the same z on every process would repeat each fake image
    # world_size times in the global batch); the weights still start equal, as DDP copies rank 0's to the others
    torch.manual_seed(seed + world()[0])  # also seeds every CUDA device


def rng_state():
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ------------------------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
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
        if folder is not None:  # an image-folder copy, e.g. a JPEG export
            return _load_folder(folder, image_size or 32, conditional, ram_budget, workers, name="cifar10", native=32)
        images, labels, classes, source = _load_cifar10(root, split)
    elif name == "folder":
        if split != "train":
            raise UserError("--dataset folder has no test split: give the reference folder itself", 2)
        return _load_folder(root, image_size or 64, conditional, ram_budget, workers)
    else:
        raise UserError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}", 2)
    native = images.shape[-1]
    images, mapping = to_training_size(images, image_size or native)
    return Data(name, images.shape[1], images.shape[-1], native, mapping, classes, labels, images=images,
                source=source)


def _load_idx(name, root, split):
    import torchvision.datasets as tvd
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    raw = root / cls.__name__ / "raw"
    debian = name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir()  # Debian's dataset-fashion-mnist package
    ds = _torchvision(cls, name, root, split, raw, "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                      f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (uncompressed) in {raw}"
                      + (" or apt-get install dataset-fashion-mnist" if name == "fashion-mnist" else ""),
                      instead=(lambda: _unpack_debian_fashion_mnist(raw)) if debian else None)
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
    ds = _torchvision(tvd.CIFAR10, "cifar10", root, split, root / "cifar-10-batches-py",
                      f"cifar-10-python.tar.gz in {root}, or an image folder {root / split}/<class>/*.png")
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return images, torch.tensor(ds.targets), list(ds.classes), str(root / "cifar-10-batches-py")


def _torchvision(cls, name, root, split, where, what_to_put, instead=None):
    """torchvision's copy of a dataset; where it is missing, instead() lays the files out, or torchvision downloads
    them; offline, one line says which files to put where."""
    try:
        return cls(root, train=split == "train", download=False)
    except RuntimeError:
        if instead:
            instead()
            return cls(root, train=split == "train", download=False)
    print(f"{name}: not found under {where}; downloading...", file=sys.stderr)
    try:
        return cls(root, train=split == "train", download=True)
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


# --------------------------------------------------------------------------------------------------- grids and plots
def save_grid(images, path, nrow=8, row_labels=None, title=None):
    """images in [-1, 1] -> a PNG grid (torchvision's make_grid), upscaled to at least 400 px wide so that 28-32 px
    images are readable; row_labels: one string per row (lines split by \\n) in a left margin; title: on top."""
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1)
    grid = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    scale = -(-400 // grid.width)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    font = ImageFont.load_default(size=max(15, grid.width // 25))  # still readable where a page shows it smaller
    measure = ImageDraw.Draw(grid).multiline_textbbox
    left = 10 + max(measure((0, 0), s, font=font)[2] for s in row_labels) if row_labels else 0
    top = font.size * 3 // 2 if title else 0
    canvas = Image.new("RGB", (grid.width + left, grid.height + top), "white")
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + 2, font.size // 4), title, fill="black", font=font)
    for i, s in enumerate(row_labels or []):
        row_h = grid.height / len(row_labels)
        draw.multiline_text((5, top + row_h * (i + 0.5) - measure((0, 0), s, font=font)[3] / 2), s, "black", font)
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))
    return path


def save_gif(frames, path, ms=500):
    """frames: image files or PIL images."""
    from PIL import Image
    imgs = [(f if isinstance(f, Image.Image) else Image.open(f)).convert("RGB") for f in frames]
    if imgs:
        imgs = [im.resize(imgs[-1].size) for im in imgs]
        atomic_write(path, lambda tmp: imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                                                    duration=ms, loop=0))


def plot_losses(csv_path, png_path, title):
    """losses.csv -> losses.png: a panel per group of columns (loss_*, wasserstein_*, and D's outputs D(x), D(G(z))),
    each curve a moving average over ~0.5 % of the run, so that trends show through GAN noise. A column's empty
    cells (steps that did not compute it: the WGANs' loss_g) are left out of its curve."""
    from matplotlib.figure import Figure  # the object API: no window backend is touched
    names = open(csv_path).readline().strip().split(",")
    cols = np.genfromtxt(csv_path, delimiter=",", skip_header=1, ndmin=2).T  # empty cells: nan
    groups = {}
    for name in names[2:]:
        groups.setdefault(name.split("_")[0] if "(" not in name else "D's outputs", []).append(name)
    fig = Figure(figsize=(8, 2 + 2 * len(groups)))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (group, members) in zip(axes, groups.items()):
        for name in members:
            y = cols[names.index(name)]
            x, y = cols[0][np.isfinite(y)], y[np.isfinite(y)]
            k = max(1, len(y) // 200)
            if len(y):  # (none yet: a smoke run shorter than d_steps steps)
                ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=name, lw=1)
        ax.set_ylabel(group)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


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


def save_checkpoint(state, folder, epoch_file=None):
    """folder/epoch_file (at an epoch's end) and folder/last.pt: the same bytes under a second name (a hard link)
    rather than written and synced twice; written twice where the file system has no hard links."""
    if epoch_file:
        atomic_save(state, epoch_file)
        try:
            atomic_write(folder / "last.pt", lambda tmp: os.link(epoch_file, tmp))
            return
        except OSError:
            pass
    atomic_save(state, folder / "last.pt")


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


# ---------------------------------------------------------------------------------------------------------- logging
class Logger:
    """The figures train_step returns each step. Tensors are kept where they are (a GPU never waits for the host in
    the per-step path) and read in one transfer every LOG_EVERY steps and before every grid and checkpoint; then a
    NaN or inf stops the run, naming the step where it appeared, and the rest go to losses.csv (rank 0), the
    progress bar and TensorBoard. Under torchrun each figure is averaged over the processes."""

    def __init__(self, csv, device, world, checkpoints, tensorboard_dir=None):
        self.csv, self.device, self.world, self.checkpoints, self.tb = csv, device, world, checkpoints, None
        self.names, self.pending, self.rows, self.latest = [], [], [], {}
        self.tensorboard_dir = tensorboard_dir

    def start(self, step):
        """Forget what a killed run logged after `step` (0: a new run), so a curve has no repeats: its losses.csv
        rows, and its TensorBoard events (purge_step hides those after `step` in the same folder)."""
        if self.csv and self.csv.exists():
            if step == 0:  # a new run: deleted, not truncated, as its columns may differ from the dead run's
                self.csv.unlink()
            else:
                lines = self.csv.read_text().splitlines(keepends=True)
                keep = lines[:1] + [l for l in lines[1:] if int(l.split(",", 1)[0]) <= step]
                atomic_write(self.csv, lambda tmp: Path(tmp).write_text("".join(keep)))
        if self.tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard", 2) from None
            self.tb = SummaryWriter(str(self.tensorboard_dir), purge_step=step + 1)

    def log(self, step, epoch, stats):
        """stats: {'loss/d': tensor or float, ...}; None for a figure this step did not compute (the WGANs' loss/g
        on critic-only steps): an empty cell in losses.csv."""
        self.names = self.names or list(stats)  # losses.csv's columns: the first step's keys
        self.pending.append((step, epoch, {k: v for k, v in stats.items() if v is not None}))

    def read(self):
        if not self.pending:
            return
        stack = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).detach().reshape(())
                             for _, _, row in self.pending for v in row.values()])  # one transfer for them all
        if self.world > 1:  # the global batch's figures, equal on every process: all of them stop together
            import parallel
            stack = parallel.mean(stack)
        values, pending, self.pending = iter(stack.tolist()), self.pending, []
        for step, epoch, row in pending:
            row = {k: next(values) for k in row}
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            if bad:
                self.write()
                raise UserError(f"{bad[0]} is {row[bad[0]]} at step {step} (epoch {epoch}): training diverged; the "
                                f"last good checkpoint is in {self.checkpoints} (try a lower --lr)")
            self.rows.append((step, epoch, row))
            self.latest.update(row)  # the progress bar shows a figure's latest value
            for k, v in row.items() if self.tb else ():
                self.tb.add_scalar(k, v, step)

    def write(self):
        """Append the rows read so far to losses.csv."""
        if self.rows and self.csv:
            new = not self.csv.exists()
            self.csv.parent.mkdir(parents=True, exist_ok=True)
            with open(self.csv, "a") as f:
                if new:
                    f.write(",".join(["step", "epoch"] + [n.replace("/", "_") for n in self.names]) + "\n")
                for step, epoch, row in self.rows:
                    f.write(f"{step},{epoch}," + ",".join(f"{row[n]:.6g}" if n in row else "" for n in self.names)
                            + "\n")
        self.rows = []

    def image(self, fake, step):
        if self.tb:
            from torchvision.utils import make_grid
            self.tb.add_image("samples", make_grid(fake.cpu(), nrow=8, normalize=True, value_range=(-1, 1)), step)

    def close(self):
        self.write()
        if self.tb:
            self.tb.close()

    def postfix(self, img_s):
        short = {"loss/d": "loss_D", "loss/g": "loss_G", "loss/gp": "loss_GP", "wasserstein/estimate": "W"}
        return " ".join(f"{short.get(k, k)}={self.latest[k]:.3f}" for k in self.names if k in self.latest) + \
            f" img/s={img_s:.0f}"


# ------------------------------------------------------------------------------------------------------------- Run
def check_run(args, device, world_size):
    """Refuse what cannot run, before anything is built or written."""
    if args.amp and device.type == "mps":
        raise UserError("--amp: bfloat16 autocast is not offered on Apple MPS here; run without --amp", 2)
    if args.amp and device.type == "cpu" and cpu_bf16() is False:
        print("warning: --amp: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): expect it to be many times "
              "slower (10-20x on an AVX2-only CPU), not faster", file=sys.stderr)
    if args.batch_size % world_size:
        fit = args.batch_size // world_size * world_size or world_size
        raise UserError(f"--batch-size {args.batch_size} is the global batch: it must split evenly over the "
                        f"{world_size} processes (try {fit})", 2)


def fixed_noise(args, classes, n=64):
    """The z (and labels) of every grid a run draws, from a generator of their own: the same for a seed. Conditional:
    one row per class, one column per z, so that each column shows one z across the classes."""
    g = torch.Generator().manual_seed(args.seed)
    if not classes:
        return torch.randn(n, args.latent_dim, generator=g), None
    z = torch.randn(10, args.latent_dim, generator=g).repeat(len(classes), 1)
    return z, torch.arange(len(classes)).repeat_interleave(10)


def memory_format(G, D, device):
    """Convolutional nets train in channels_last (NHWC), the same maths in a layout the convolution kernels of CPUs
    and CUDA run faster (docs/speed.md); in place, so the optimizers keep the same weights. -> the batches' layout."""
    conv = any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in G.modules())
    layout = torch.channels_last if CHANNELS_LAST and conv and device.type != "mps" else torch.contiguous_format
    G.to(memory_format=layout)
    D.to(memory_format=layout)
    return layout


def epoch_batches(data, order, batch_size, device, layout, workers):
    """(images in [-1, 1] on the device, labels) in the order given. In RAM (data.images): index the uint8 tensor and
    normalise on the device; too big for RAM: stream through a DataLoader in the same order."""
    if data.images is not None:
        for idx in order.to(data.images.device).split(batch_size)[:len(order) // batch_size]:
            yield normalize(data.images[idx]).contiguous(memory_format=layout), data.labels[idx]
        return
    batches = loader(data.stream, workers, batch_size=batch_size, sampler=order.tolist(), drop_last=True,
                     pin_memory=device.type == "cuda")
    for x, y in batches:
        yield normalize(x.to(device, non_blocking=True)).contiguous(memory_format=layout), y.to(device)


class Run:
    """One training run: folders, resume, fixed noise, batches with a progress bar, logging, grids, checkpoints.

    models/<name>/epoch_NNN.pt and last.pt; results/<name>/epoch_NNN.png, progress.gif, losses.csv, losses.png;
    runs/<name>/ for TensorBoard. Under torchrun only rank 0 writes."""

    def __init__(self, args, data, G, D, opt_G, opt_D, model_args, device):
        self.rank, self.world = world()
        check_run(args, device, self.world)
        if data.images is not None:  # in RAM: moved to the device once, and batches are indexed there
            data = dataclasses.replace(data, images=data.images.to(device), labels=data.labels.to(device))
        self.args, self.data, self.G, self.D, self.opt_G, self.opt_D = args, data, G, D, opt_G, opt_D
        self.model_args, self.device = model_args, device
        self.models, self.results = (Path(args.out) / d / args.name for d in ("models", "results"))
        self.epoch, self.step, self.seconds, self.t0 = 0, 0, 0.0, time.time()  # seconds: summed over resumes
        self.layout = memory_format(G, D, device)
        self.classes = data.classes if args.conditional else []
        self.fixed_z, self.fixed_labels = fixed_noise(args, self.classes)
        self.logger = Logger(self.results / "losses.csv" if self.rank == 0 else None, device, self.world,
                             self.models, args.tensorboard and self.rank == 0 and Path(args.out) / "runs" / args.name)
        if args.resume:
            self._resume(args.resume)
        elif any(self.models.glob("*.pt")):
            raise UserError(f"{self.models} already holds checkpoints: add --resume to continue that run, "
                            "or --name NEW to start another", 2)
        self.logger.start(self.step)

    def parallel(self, G, D):
        """One process: G and D as they are. Under torchrun: parallel.wrap's synchronised BatchNorm and
        DistributedDataParallel, which averages the gradients over the processes."""
        if self.world == 1:
            return G, D
        import parallel
        return parallel.wrap(G, D, self.device)

    def _resume(self, path):  # the arguments were already taken from it by finish_args
        ck = load_checkpoint(path, map_location=self.device)
        n = ck.get("world_size", 1)
        if n != self.world:
            how = "python <script>.py --resume" if n == 1 else f"torchrun --nproc_per_node={n} <script>.py --resume"
            raise UserError(f"{path} was trained by {n} process{'es' * (n > 1)} and this run has {self.world}: "
                            f"each process's data shard and random state are in it, so resume with {n} ({how})", 2)
        for name in ("G", "D", "opt_G", "opt_D"):
            getattr(self, name).load_state_dict(ck[name])
        self.epoch, self.step, self.seconds = ck["epoch"], ck["step"], ck.get("train_seconds", 0.0)
        self.fixed_z = ck["fixed_z"].cpu()
        self.fixed_labels = None if ck["fixed_labels"] is None else ck["fixed_labels"].cpu()
        set_rng_state(ck["rng_ranks"][self.rank] if self.world > 1 else ck["rng"])
        if self.rank == 0:
            print(f"resuming {path} at epoch {self.epoch}, step {self.step}", file=sys.stderr)

    def batches(self):
        """Yield (real in [-1, 1] on the device, labels or None) until --epochs or --max-steps; checkpoint and
        sample at every epoch end."""
        from tqdm import tqdm
        a, n = self.args, len(self.data)
        per = n // a.batch_size
        if per == 0:
            raise UserError(f"the dataset has {n} images, fewer than one batch of {a.batch_size}: "
                            "lower --batch-size", 2)
        if self.epoch >= a.epochs and self.rank == 0:
            print(f"{self.models} has already trained {self.epoch} epochs: raise --epochs to go on", file=sys.stderr)
        self.t0 = start = time.time()
        while self.epoch < a.epochs:
            first = self.step - self.epoch * per  # > 0 when resuming inside an epoch
            order = epoch_order(n, a.seed, self.epoch)[first * a.batch_size: per * a.batch_size]
            if self.world > 1:  # this process's share of each global batch
                import parallel
                order = parallel.shard(order, a.batch_size, self.rank, self.world)
            with tqdm(total=per, initial=first, desc=f"epoch {self.epoch + 1}/{a.epochs}", unit="step",
                      dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30, disable=self.rank > 0) as bar:
                t0 = time.time()
                for real, y in epoch_batches(self.data, order, a.batch_size // self.world, self.device,
                                             self.layout, a.workers):
                    yield real, (y if a.conditional else None)
                    self.step += 1
                    bar.update(1)
                    if len(self.logger.pending) >= LOG_EVERY:
                        self.logger.read()
                        bar.set_postfix_str(self.logger.postfix((bar.n - first) * a.batch_size / (time.time() - t0)),
                                            refresh=False)
                    if a.sample_every and self.step % a.sample_every == 0:
                        self.sample(self.results / f"step_{self.step:07d}.png", f"step {self.step}")
                    if a.max_steps and self.step >= a.max_steps:
                        break
            whole = self.step == (self.epoch + 1) * per  # else --max-steps stopped inside the epoch
            self.epoch += whole
            self.checkpoint(whole)
            if not whole:
                break
        self.finish(time.time() - start)

    def log(self, stats):
        """The step's figures, from train_step: read later, in batches (Logger)."""
        self.logger.log(self.step + 1, self.epoch + 1, stats)

    @torch.no_grad()
    def sample(self, path, title):
        """The fixed-noise grid, in eval mode (BatchNorm running statistics) so it does not depend on the batch."""
        self.logger.read()  # a NaN stops the run before its grid is drawn
        if self.rank > 0:  # rank 0 draws it from its own G: a pass through the DDP wrapper would wait for the others
            return
        self.G.eval()
        y = None if self.fixed_labels is None else self.fixed_labels.to(self.device)
        fake = self.G(self.fixed_z.to(self.device), y)
        self.G.train()
        save_grid(fake, path, nrow=10 if self.classes else 8, row_labels=[str(c) for c in self.classes] or None,
                  title=title)
        self.logger.image(fake, self.step)

    def checkpoint(self, epoch_end):
        """At an epoch's end: epoch_NNN.pt (last.pt is the same file), its grid and the GIF. Where --max-steps stops
        inside an epoch: last.pt and the grid step_NNNNNNN.png. Both: losses.csv and its plot."""
        self.logger.read()
        self.logger.write()
        self.save(self.models / f"epoch_{self.epoch:03d}.pt" if epoch_end else None)
        self.sample(self.results / (f"epoch_{self.epoch:03d}.png" if epoch_end else f"step_{self.step:07d}.png"),
                    f"epoch {self.epoch}" if epoch_end else f"step {self.step}")
        if self.rank == 0:
            if epoch_end:
                save_gif(sorted(self.results.glob("epoch_*.png")), self.results / "progress.gif")
            plot_losses(self.results / "losses.csv", self.results / "losses.png", self.args.name)

    def save(self, epoch_file):
        """The checkpoint: plain data only, so that torch.load(..., weights_only=True) reads it."""
        d = self.data
        state = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "arch": self.args.arch,
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
                 "model_args": dict(self.model_args), "epoch": self.epoch, "step": self.step,
                 "G": self.G.state_dict(), "D": self.D.state_dict(),
                 "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                 "fixed_z": self.fixed_z, "fixed_labels": self.fixed_labels, "rng": rng_state(),
                 "world_size": self.world, "rng_ranks": [],
                 "classes": list(d.classes), "image_shape": [d.channels, d.image_size, d.image_size],
                 "data": {"dataset": d.name, "native_size": d.native_size, "mapping": d.mapping, "source": d.source},
                 "train_seconds": self.seconds + time.time() - self.t0, "device": device_name(self.device),
                 "torch_version": str(torch.__version__)}
        if self.world > 1:  # every process's RNG state, for an exact resume (a collective: every process calls it)
            import parallel
            state["rng_ranks"] = parallel.gather(rng_state())
        if self.rank == 0:
            save_checkpoint(state, self.models, epoch_file)

    def finish(self, seconds):
        self.logger.read()
        self.logger.close()
        if self.rank > 0:
            return
        grids = sorted(self.results.glob("epoch_*.png")) or sorted(self.results.glob("step_*.png"))
        gif = ", progress.gif" if (self.results / "progress.gif").exists() else ""
        total = f" this time, {self.seconds + seconds:.0f} s in all" if self.seconds > 1 else ""
        print(f"done: {self.step} steps, epoch {self.epoch}, {seconds:.0f} s{total}\n"
              f"  checkpoints  {self.models}/ (last.pt)\n"
              f"  samples      {grids[-1] if grids else self.results}{gif}\n"
              f"  losses       {self.results}/losses.csv, losses.png\n"
              + (f"  tensorboard  {self.logger.tb.log_dir}\n" if self.logger.tb else "")
              + f"  look at them python eval.py --ckpt {self.models}")
