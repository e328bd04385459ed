"""Shared plumbing for the ganzoo scripts: arguments, device, seeding, data, grids, checkpoints, logging.

No model or loss lives here, and nothing here decides when a grid is drawn or a checkpoint written: each script's
main() shows its loop, and `Run` (at the bottom) keeps the run's state and files and does what the loop asks.
"""
import argparse
import dataclasses
import hashlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import parallel

CKPT_FORMAT, CKPT_VERSION = "ganzoo-checkpoint", 1
DATASETS = ("mnist", "fashion-mnist", "cifar10", "folder")
TORCHVISION = {"mnist": ("MNIST", "MNIST/raw"), "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw"),
               "cifar10": ("CIFAR10", "cifar-10-batches-py")}  # torchvision's class, and the folder it reads
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RAM_BUDGET = 8 * 2**30  # bytes: the most an image folder may take in memory, decoded (uint8)
LOG_EVERY = 25  # steps between reads of the logged figures (each read waits for a GPU to catch up)


class UserError(Exception):
    """A mistake the user can fix: printed as one line, no traceback. code 2 = usage error."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def cli(main):
    """Run main() and turn user errors into one line on stderr and a non-zero exit."""
    try:
        main()
        if parallel.world()[1] > 1:
            parallel.close()
    except UserError as e:
        if parallel.world()[0] == 0:  # under torchrun every process meets the same error: rank 0 says it
            print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print("interrupted: checkpoints already written are intact (continue with --resume)", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------------------------------------- arguments
def positive(kind):
    """An argparse type: a finite number of this kind (int or float) > 0."""
    def parse(s):
        v = kind(s)  # a ValueError: argparse says "invalid int value: 'x'"
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{s!r} must be > 0")
        return v
    parse.__name__ = kind.__name__
    return parse


positive_int, positive_float = positive(int), positive(float)


def arg_parser(doc, *, lr, batch_size, d_steps, latent_dim=100, epochs=25, ema=0.0):
    """The command line every training script shares; each script passes its paper's defaults."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="training data")
    p.add_argument("--data-root", default="data", help="where it lives or downloads to (folder: the folder itself)")
    p.add_argument("--image-size", type=int, default=None, help="32 or 64; None: 64 for folder, else 32")
    p.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps, checkpointed")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=positive_float, default=lr, help="learning rate")
    p.add_argument("--latent-dim", type=positive_int, default=latent_dim, help="size of z")
    p.add_argument("--d-steps", type=positive_int, default=d_steps, help="D updates per G update (k, n_critic, n_dis)")
    p.add_argument("--conditional", action="store_true", help="class-conditional: G and D both get the label")
    p.add_argument("--ema", type=float, default=ema, help="decay of the average of G that samples come from (0: G)")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, noise, data order)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="auto: cuda, mps, cpu")
    p.add_argument("--out", default=".", help="root for models/, results/ and runs/")
    p.add_argument("--name", default=None, help="run name; None: <arch>_<dataset>, _cond when conditional")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT", help="continue the run from its "
                   "last checkpoint, or from CKPT (its settings stay the run's)")
    p.add_argument("--sample-every", type=int, default=0, metavar="N", help="also save a grid every N steps (0: off)")
    p.add_argument("--tensorboard", action="store_true", help="also log to <out>/runs/<name> (needs tensorboard)")
    p.add_argument("--workers", type=int, default=2, help="processes decoding an image folder (once: it is cached)")
    p.add_argument("--amp", action="store_true", help="G's and D's forward passes in bfloat16 (losses in float32): "
                   "faster on CPUs with AVX-512 BF16 or AMX, 10-20x slower on AVX2 only, slower on an H200")
    return p


def finish_args(parser, argv, arch):
    """Parse, fill the defaults that depend on other flags, and reject values argparse cannot check alone."""
    args = parser.parse_args(argv)
    if args.resume:  # the flags typed on the command line: those a second parse sets over a placeholder
        unset = object()
        again = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(vars(args), unset)))
        typed = {k: v for k, v in vars(again).items() if v is not unset}
    args.arch = arch
    args.image_size = args.image_size or (64 if args.dataset == "folder" else 32)
    if args.image_size not in (32, 64):
        parser.error(f"--image-size must be 32 or 64, not {args.image_size}")
    if args.workers < 0 or args.sample_every < 0 or not 0 <= args.ema < 1:
        parser.error("--workers and --sample-every must be >= 0, --ema in [0, 1)")
    args.name = args.name or f"{arch}_{args.dataset.replace('-', '_')}" + ("_cond" if args.conditional else "")
    if os.sep in args.name or args.name.startswith("."):
        parser.error(f"--name {args.name!r} must be a plain folder name")
    if args.resume:
        _resume_args(args, typed)
    return args


# the flags a resumed run may change: how long and where it runs, not what it trains
RUN_CONTROL = ("epochs", "max_steps", "device", "workers", "tensorboard", "sample_every", "out", "data_root", "resume")


def _resume_args(args, typed):
    """--resume: the settings come from the checkpoint; a flag typed with another value (not RUN_CONTROL's) stops it."""
    path = Path(args.out) / "models" / args.name / "last.pt" if args.resume is True else Path(args.resume)
    if not path.exists():
        raise UserError(f"--resume: no checkpoint at {path} (start the run without --resume, or give its path)", 2)
    ck = load_checkpoint(path)
    if ck["arch"] != args.arch:
        raise UserError(f"--resume: {path} was written by {ck['arch']}.py, not {args.arch}.py", 2)
    for k, v in ck["args"].items():
        if k in typed and k not in RUN_CONTROL and typed[k] != v:
            flag = "--" + k.replace("_", "-")
            raise UserError(f"--resume: {flag} {typed[k]} differs from the run's {flag} {v} ({path}); a resumed run "
                            f"keeps its settings: to train with {flag} {typed[k]}, start another run (--name NEW)", 2)
        if k not in RUN_CONTROL:
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
    if name == "mps" and not mps:
        raise UserError("--device mps: Apple MPS is not available here (use --device auto or cpu)", 2)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if name == "mps":
            raise UserError("torchrun: several processes train on CUDA GPUs (nccl) or the CPU (gloo), not on MPS", 2)
        return parallel.init(torch.device(name))
    return torch.device(name)


def device_name(device):
    """e.g. 'cpu: AMD EPYC (2 threads, AVX512)': the vector instructions tell apart CPUs that train differently."""
    if device.type != "cpu":
        return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "mps: Apple GPU"
    model = _cpuinfo("model name")
    return f"cpu: {model or 'unknown'} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def _cpuinfo(field):
    try:
        return next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith(field)), None)
    except OSError:
        return None


def seed_everything(seed):
    # + rank: under torchrun each process draws its own z; the weights start equal all the same (DDP copies rank 0's)
    torch.manual_seed(seed + parallel.world()[0])  # also seeds every CUDA device


def rng_state():
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def ema(decay):
    """AveragedModel's multi_avg_fn for G's average: an EMA whose n-th update keeps min(decay, (1 + n) / (10 + n)) of
    it (TensorFlow's warm-up), so that G's first, poor weights fade within a few hundred updates. 0: G, exactly."""
    @torch.no_grad()
    def update(averaged, current, n):  # the weight stays a tensor: a GPU never waits for the host here
        if averaged[0].is_floating_point():  # (not BatchNorm's batch counters, which its momentum leaves unused)
            torch._foreach_lerp_(averaged, current, [(9 / (10 + n)).clamp(min=1 - decay)] * len(averaged))
    return update


# ------------------------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class Data:
    """A dataset in memory: images uint8 (N, C, S, S) at training size, labels (N,). `native_size` and `mapping`
    ('pad', 'resize' or 'none') say how the files' images became S x S, so that samples map back exactly."""
    name: str
    channels: int
    image_size: int
    native_size: int
    mapping: str
    classes: list
    labels: torch.Tensor
    images: torch.Tensor
    source: str = ""

    def __len__(self):
        return len(self.labels)


def to_training_size(x, size):
    """uint8 (N, C, s, s) -> ((N, C, size, size), mapping). 28 -> 32 pads 2 black pixels a side (exactly undone:
    MNIST digits sit on black with a 4-pixel margin already); any other size is a bilinear antialiased resize."""
    s = x.shape[-1]
    if s == size:
        return x, "none"
    if s == 28 and size == 32:
        return F.pad(x, (2, 2, 2, 2)), "pad"
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8), "resize"


def to_native_size(x, native_size, mapping):
    """Exact inverse of to_training_size for 'pad' and 'none', the matching resize for 'resize'. x: float or uint8."""
    if mapping != "resize":
        p = (x.shape[-1] - native_size) // 2  # 0 for 'none'
        return x[..., p:p + native_size, p:p + native_size]
    y = F.interpolate(x.float(), size=(native_size, native_size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y


def load_dataset(name, root, image_size, split="train", conditional=False, workers=2):
    """Load a dataset by name (see DATASETS). split: 'train' or 'test'."""
    root = Path(root)
    if name == "cifar10":
        folder = next((r / split for r in (root, root / "cifar10-jpg") if (r / split).is_dir()), None)
        if folder and any(p.is_dir() and p.name[0] != "." for p in folder.iterdir()):  # class folders: a JPEG copy
            return _load_folder(folder, image_size or 32, conditional, workers, name="cifar10", native=32)
    elif name == "folder":
        if split != "train":
            raise UserError("--dataset folder has no test split: give the reference folder itself", 2)
        return _load_folder(root, image_size or 64, conditional, workers)
    elif name not in TORCHVISION:
        raise UserError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}", 2)
    images, labels, classes, source = _load_torchvision(name, root, split)
    native = images.shape[-1]
    images, mapping = to_training_size(images, image_size or native)
    return Data(name, images.shape[1], images.shape[-1], native, mapping, classes, labels, images, source)


def _load_torchvision(name, root, split):
    """torchvision's copy, downloaded where missing (offline: one line says what to put where)."""
    import torchvision.datasets as tvd
    cls, folder = TORCHVISION[name]
    try:
        ds = getattr(tvd, cls)(root, train=split == "train", download=False)
    except RuntimeError:
        print(f"{name}: not found under {root / folder}; downloading...", file=sys.stderr)
        try:
            ds = getattr(tvd, cls)(root, train=split == "train", download=True)
        except Exception as e:  # torchvision raises several kinds (URLError, RuntimeError, OSError) when offline
            what = f"the 4 uncompressed IDX files (train-images-idx3-ubyte, ...) in {root / folder}" if name != \
                "cifar10" else f"cifar-10-python.tar.gz in {root}, or an image folder {root / split}/<class>/*.png"
            raise UserError(f"{name} is missing and could not be downloaded ({type(e).__name__}): put {what} "
                            "(the README's Data section lists the layouts)") from None
    images = torch.as_tensor(ds.data)  # MNIST's (N, 28, 28); CIFAR-10's (N, 32, 32, 3)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()
    classes = [c.split(" - ")[0] for c in ds.classes]  # MNIST's '0 - zero' -> '0'
    return images, torch.as_tensor(ds.targets).long(), classes, str(root / folder.split("/")[0])


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
    """(uint8 (3, size, size): RGB, short side resized, center-cropped; label; ok). An unreadable file (truncated,
    not an image) gives a black image and ok=False, not an error, so that one pass finds them all."""

    def __init__(self, files, labels, size):
        self.files, self.labels, self.size = files, labels, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image
        import torchvision.transforms.v2.functional as TF
        try:
            with Image.open(self.files[i]) as im:
                x = TF.pil_to_tensor(im.convert("RGB"))
        except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError... by format
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), self.labels[i], False
        return TF.center_crop(TF.resize(x, self.size, antialias=True), [self.size, self.size]), self.labels[i], True


def _load_folder(root, size, conditional, workers, name="folder", native=None):
    files, labels, classes = _list_images(Path(root))
    if conditional and not classes:
        raise UserError(f"--conditional needs class subfolders in {root} (e.g. {root}/cat/*.jpg)", 2)
    if len(files) * 3 * size * size > RAM_BUDGET:
        raise UserError(f"{root}: {len(files)} images at {size}x{size} take {len(files) * 3 * size**2 / 2**30:.1f} GiB "
                        f"decoded, over the {RAM_BUDGET / 2**30:.0f} GiB ganzoo holds in memory: use a subset", 2)
    images, ok = _decode_cached(ImageFiles(files, labels, size), root, workers)
    if not ok.all():  # skip unreadable files: real folders (web scrapes, COCO copies) have a few
        bad = [files[i].name for i in torch.nonzero(~ok).flatten().tolist()]
        if len(bad) == len(files):
            raise UserError(f"none of the {len(files)} image files in {root} can be read (e.g. {bad[0]})")
        print(f"warning: skipping {len(bad)} unreadable file{'s' * (len(bad) > 1)} of {len(files)} in {root}: "
              + ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else ""), file=sys.stderr)
    mapping = "none" if native in (None, size) else "resize"
    return Data(name, 3, size, native or size, mapping, classes, labels[ok], images, str(root))


def cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ganzoo"


def _decode_cached(ds, root, workers):
    """-> (uint8 images, mask of the readable files), decoded once and cached by files, sizes, mtimes and size."""
    h = hashlib.sha1(f"{Path(root).resolve()}|{ds.size}|RGB|True".encode())
    for f in ds.files:
        h.update(f"{f}|{f.stat().st_size}|{f.stat().st_mtime_ns}".encode())
    path = cache_dir() / f"folder-{h.hexdigest()[:16]}.pt"
    try:
        cached = torch.load(path, weights_only=True)
        return cached["images"], cached["ok"]
    except Exception:  # no cache yet, or an unreadable one: decode
        pass
    from tqdm import tqdm
    # a private generator: a run's weights never depend on whether images went through a DataLoader
    data = torch.utils.data.DataLoader(ds, 256, num_workers=workers, generator=torch.Generator().manual_seed(0))
    batches = tqdm(data, desc=f"decoding {root} (once)")
    parts, ok = zip(*((x[k], k) for x, _, k in batches))
    images, ok = torch.cat(parts), torch.cat(ok)
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


def epoch_batches(data, order, batch_size):
    """(images in [-1, 1] in channels_last, the layout convolutions run fastest in; labels) in the order given."""
    for idx in order.to(data.images.device).split(batch_size)[:len(order) // batch_size]:
        yield normalize(data.images[idx]).contiguous(memory_format=torch.channels_last), data.labels[idx]


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
    from PIL import Image  # frames: image files or PIL images
    imgs = [(f if isinstance(f, Image.Image) else Image.open(f)).convert("RGB") for f in frames]
    if imgs:
        imgs = [im.resize(imgs[-1].size) for im in imgs]
        atomic_write(path, lambda tmp: imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:],
                                                    duration=ms, loop=0))


def plot_losses(csv_path, png_path, title):
    """losses.csv -> losses.png: a panel per group of columns (loss_*, wasserstein_*, D's outputs), each curve a
    moving average over ~0.5 % of the run so trends show through GAN noise; empty cells (the WGANs' loss_g) skipped."""
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
        tmp.unlink(missing_ok=True)


def atomic_save(obj, path):
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(state, path):
    """state to path, and to last.pt beside it: a hard link (written twice where the file system has none)."""
    path, last = Path(path), Path(path).with_name("last.pt")
    atomic_save(state, path)
    if path != last:
        try:
            atomic_write(last, lambda tmp: os.link(path, tmp))
        except OSError:
            atomic_save(state, last)


def load_checkpoint(path, map_location="cpu"):
    """Load a ganzoo checkpoint as plain data (weights_only=True: nothing in the file can run code)."""
    path = Path(path) / "last.pt" if Path(path).is_dir() else Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}", 2)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        if any(w in str(e) for w in ("weights_only", "Unsupported global", "unpickl", "Unpickl")):
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


def resume(path, nets, world_size, rank, device, max_steps=None):
    """--resume's checkpoint, loaded into nets (G, D, opt_G, opt_D, G_ema), with the random state where it stopped."""
    ck = load_checkpoint(path, map_location=device)
    n = ck.get("world_size", 1)
    if max_steps and ck["step"] >= max_steps:
        raise UserError(f"--max-steps {max_steps}: {path} is at step {ck['step']} already", 2)
    if n != world_size:
        how = "python <script>.py --resume" if n == 1 else f"torchrun --nproc_per_node={n} <script>.py --resume"
        raise UserError(f"{path} was trained by {n} process{'es' * (n > 1)} and this run has {world_size}: "
                        f"each process's data shard and random state are in it, so resume with {n} ({how})", 2)
    for name, m in nets.items():
        if name in ck:  # (a checkpoint from before G_ema: its average starts at G's next update)
            m.load_state_dict(ck[name])
    set_rng_state(ck["rng_ranks"][rank] if world_size > 1 else ck["rng"])
    if rank == 0:
        print(f"resuming {path} at step {ck['step']}", file=sys.stderr)
    return ck


# ---------------------------------------------------------------------------------------------------------- logging
class Logger:
    """train_step's figures, kept as tensors (a GPU never waits for the host in the per-step path) and read in one
    transfer every LOG_EVERY steps and before each grid and checkpoint: a NaN or inf stops the run, naming its step;
    the rest go to losses.csv, TensorBoard and the progress bar. Under torchrun: averaged over the processes."""

    def __init__(self, csv, device, world_size, checkpoints):
        self.csv, self.device, self.world, self.checkpoints = csv, device, world_size, checkpoints
        self.names, self.pending, self.latest, self.bar, self.tb = [], [], {}, None, None

    def start(self, step, tensorboard_dir=None):
        """Forget what a killed run logged after `step` (0: a new run), so a curve has no repeats: its losses.csv
        rows, and its TensorBoard events (purge_step hides those after `step` in the same folder)."""
        if self.csv and self.csv.exists():
            lines = self.csv.read_text().splitlines(keepends=True)
            keep = lines[:1] + [l for l in lines[1:] if int(l.split(",", 1)[0]) <= step] if step else []
            atomic_write(self.csv, lambda tmp: Path(tmp).write_text("".join(keep)))  # a new run: empty, new columns
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard", 2) from None
            self.tb = SummaryWriter(str(tensorboard_dir), purge_step=step + 1)
            print(f"tensorboard: {tensorboard_dir} (tensorboard --logdir {tensorboard_dir.parent})", file=sys.stderr)

    def log(self, step, epoch, stats):
        """stats: {'loss/d': tensor or float, ...}; None for a figure this step did not compute (the WGANs' loss/g
        on critic-only steps): an empty cell in losses.csv."""
        self.names = self.names or list(stats)  # losses.csv's columns: the first step's keys
        self.pending.append((step, epoch, {k: v for k, v in stats.items() if v is not None}))
        if len(self.pending) >= LOG_EVERY:
            self.read()

    def read(self):
        if not self.pending:
            return
        stack = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).detach().reshape(())
                             for _, _, row in self.pending for v in row.values()])  # one transfer for them all
        if self.world > 1:  # the global batch's figures, equal on every process: all of them stop together
            stack = parallel.mean(stack)
        values, pending, self.pending = iter(stack.tolist()), self.pending, []
        rows = [(step, epoch, {k: next(values) for k in row}) for step, epoch, row in pending]
        for i, (step, epoch, row) in enumerate(rows):
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            if bad:
                self.write(rows[:i])
                raise UserError(f"{bad[0]} is {row[bad[0]]} at step {step} (epoch {epoch}): training diverged; the "
                                f"last good checkpoint is in {self.checkpoints} (try a lower --lr)")
        self.write(rows)

    def write(self, rows):
        """Rows to losses.csv, TensorBoard and the progress bar (each figure's latest value)."""
        if rows and self.csv:
            self.csv.parent.mkdir(parents=True, exist_ok=True)
            header = "" if self.csv.exists() and self.csv.stat().st_size else \
                ",".join(["step", "epoch"] + [n.replace("/", "_") for n in self.names]) + "\n"
            with open(self.csv, "a") as f:
                f.write(header + "".join(f"{s},{e}," + ",".join(f"{r[n]:.6g}" if n in r else "" for n in self.names)
                                         + "\n" for s, e, r in rows))
        for step, _, row in rows:
            self.latest.update(row)
            for k, v in row.items() if self.tb else ():
                self.tb.add_scalar(k, v, step)
        short = {"loss/d": "loss_D", "loss/g": "loss_G", "loss/gp": "loss_GP", "wasserstein/estimate": "W"}
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{short.get(k, k)}={v:.3f}" for k, v in self.latest.items()), False)


# ------------------------------------------------------------------------------------------------------------- Run
def check_run(args, device, world_size, n_images):
    """Refuse what cannot run, before anything is built or written."""
    if args.amp and device.type == "mps":
        raise UserError("--amp: bfloat16 autocast is not offered on Apple MPS here; run without --amp", 2)
    if args.amp and device.type == "cpu" and "bf16" not in (_cpuinfo("flags") or "bf16"):  # Linux says, else trust
        print("warning: --amp: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): expect it to be many times "
              "slower (10-20x on an AVX2-only CPU), not faster", file=sys.stderr)
    if args.batch_size % world_size:
        raise UserError(f"--batch-size {args.batch_size} is the global batch: it must split evenly over the "
                        f"{world_size} processes (try {args.batch_size // world_size * world_size or world_size})", 2)
    if n_images < args.batch_size:
        raise UserError(f"the dataset has {n_images} images, fewer than one batch of {args.batch_size}: "
                        "lower --batch-size", 2)


def fixed_noise(args, classes, n=64):
    """The z (and labels) of a run's grids, the same for a seed; conditional: a row per class, a column per z."""
    g = torch.Generator().manual_seed(args.seed)
    if not classes:
        return torch.randn(n, args.latent_dim, generator=g), None
    z = torch.randn(10, args.latent_dim, generator=g).repeat(len(classes), 1)
    return z, torch.arange(len(classes)).repeat_interleave(10)


class Run:
    """A run's state (step, fixed noise, logs) and files: models/<name>/, results/<name>/, runs/<name>/ (TensorBoard).
    The script's loop says when to draw a grid and write a checkpoint; under torchrun only rank 0 writes."""

    def __init__(self, args, data, G, D, opt_G, opt_D, model_args, device, G_ema):  # --resume: loads them here
        self.rank, self.world = parallel.world()
        check_run(args, device, self.world, len(data))
        self.per = len(data) // args.batch_size  # steps in an epoch
        data = dataclasses.replace(data, images=data.images.to(device), labels=data.labels.to(device))  # once
        self.args, self.data, self.model_args, self.device = args, data, model_args, device
        self.nets, self.classes = {"G": G, "D": D, "opt_G": opt_G, "opt_D": opt_D, "G_ema": G_ema}, data.classes
        self.models, self.results = (Path(args.out) / d / args.name for d in ("models", "results"))
        self.fixed_z, self.fixed_labels = fixed_noise(args, data.classes if args.conditional else [])
        self.step, self.seconds = 0, 0.0  # seconds: the training time before a resume
        self.logger = Logger(self.results / "losses.csv" if self.rank == 0 else None, device, self.world, self.models)
        if args.resume:
            ck = resume(args.resume, self.nets, self.world, self.rank, device, args.max_steps)
            self.step, self.seconds, self.fixed_z = ck["step"], ck.get("train_seconds", 0.0), ck["fixed_z"].cpu()
            self.fixed_labels = None if ck["fixed_labels"] is None else ck["fixed_labels"].cpu()
        elif any(self.models.glob("*.pt")):
            raise UserError(f"{self.models} already holds checkpoints: add --resume to continue that run, "
                            "or --name NEW to start another", 2)
        self.start_epoch = self.step // self.per + 1  # the first epoch still to train (or to finish)
        self.logger.start(self.step, args.tensorboard and self.rank == 0 and Path(args.out) / "runs" / args.name)
        self.t0 = time.time()

    def parallel(self, G, D):  # under torchrun: synchronised BatchNorm and DistributedDataParallel
        return parallel.wrap(G, D, self.device) if self.world > 1 else (G, D)

    def batches(self, epoch):
        """Epoch `epoch`'s batches (from 1) after the first run.step, so that a resumed run goes on where it stopped:
        (real in [-1, 1] on the device, labels or None), with a progress bar. The order depends on seed and epoch."""
        from tqdm import tqdm
        a, first = self.args, self.step - (epoch - 1) * self.per
        order = epoch_order(len(self.data), a.seed, epoch - 1)[first * a.batch_size: self.per * a.batch_size]
        if self.world > 1:  # this process's share of each global batch
            order = parallel.shard(order, a.batch_size, self.rank, self.world)
        with tqdm(total=self.per * a.batch_size, initial=first * a.batch_size, desc=f"epoch {epoch}/{a.epochs}",
                  unit="img", dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30,
                  disable=self.rank > 0) as self.logger.bar:
            for real, y in epoch_batches(self.data, order, a.batch_size // self.world):
                yield real, (y if a.conditional else None)
                self.logger.bar.update(a.batch_size)

    def log(self, stats):
        """train_step's figures at run.step (Logger)."""
        self.logger.log(self.step, -(-self.step // self.per), stats)

    @torch.no_grad()
    def grid(self, path):
        """The fixed-noise grid to path ('epoch 3' on epoch_003.png, which joins progress.gif) from G's average in eval
        mode (BatchNorm's running statistics): a grid does not depend on a batch. A NaN logged stops the run first."""
        self.logger.read()
        if self.rank > 0:  # rank 0 draws it from its own G: a pass through the DDP wrapper would wait for the others
            return
        G = self.nets["G_ema"].module.eval()
        y = None if self.fixed_labels is None else self.fixed_labels.to(self.device)
        fake = G(self.fixed_z.to(self.device), y)
        kind, _, n = Path(path).stem.partition("_")
        save_grid(fake, path, nrow=8 if y is None else 10, row_labels=y if y is None else list(map(str, self.classes)),
                  title=f"{kind} {int(n)}" if n.isdigit() else Path(path).stem)
        if kind == "epoch":
            save_gif(sorted(Path(path).parent.glob("epoch_*.png")), Path(path).parent / "progress.gif")
        if self.logger.tb:
            self.logger.tb.add_images("samples", fake.cpu() / 2 + 0.5, self.step)

    def checkpoint(self, path):
        """The run to path and to last.pt as plain data (weights_only=True reads it); losses.png from losses.csv."""
        self.logger.read()
        d, a = self.data, self.args
        state = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "arch": a.arch, "model_args": dict(self.model_args),
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                 "epoch": self.step // self.per, "step": self.step, "fixed_z": self.fixed_z,
                 "fixed_labels": self.fixed_labels, "rng": rng_state(), "world_size": self.world, "rng_ranks": [],
                 "classes": list(d.classes), "image_shape": [d.channels, d.image_size, d.image_size],
                 "data": {"dataset": d.name, "native_size": d.native_size, "mapping": d.mapping, "source": d.source},
                 "train_seconds": self.seconds + time.time() - self.t0, "device": device_name(self.device),
                 "torch_version": str(torch.__version__), **{k: m.state_dict() for k, m in self.nets.items()}}
        if self.world > 1:  # every process's RNG state, for an exact resume (a collective: every process calls it)
            state["rng_ranks"] = parallel.gather(rng_state())
        if self.rank == 0:
            save_checkpoint(state, path)
            plot_losses(self.results / "losses.csv", self.results / "losses.png", a.name)

    def finish(self):
        """Close the logs and say what the run wrote."""
        self.logger.read()
        for handle in (self.logger.bar, self.logger.tb):  # the bar of a run stopped inside an epoch is still open
            if handle is not None:
                handle.close()
        if self.rank > 0:
            return
        grids = sorted(self.results.glob("epoch_*.png")) or sorted(self.results.glob("step_*.png"))
        gif = ", progress.gif" * (self.results / "progress.gif").exists()
        print(f"done: {self.step} steps, {self.step // self.per} epochs, {time.time() - self.t0:.0f} s\n"
              f"  checkpoints  {self.models}/ (last.pt)\n  samples      {grids[-1] if grids else self.results}{gif}\n"
              f"  losses       {self.results}/losses.csv, losses.png\n"
              f"  look at them python eval.py --ckpt {self.models}")
