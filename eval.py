"""Sample from, compare and measure any ganzoo checkpoint.

The generator is rebuilt from the checkpoint alone (its arch name and model_args), by importing that script's
Generator; the file is read with torch.load(weights_only=True), so a checkpoint cannot run code.

    python eval.py --ckpt models/dcgan_mnist/epoch_005.pt                  # grid of 64 samples
    python eval.py --ckpt models/dcgan_mnist_cond --label 7                # a class (index or name)
    python eval.py --ckpt models/dcgan_mnist/epoch_00{1,3,5}.pt            # side by side, same noise
    python eval.py --ckpt models/dcgan_mnist --interpolate --out walk.gif  # latent-space walk
    python eval.py --ckpt models/dcgan_mnist --n 10000 --save-dir samples/ # PNG files for other tools
"""
import argparse
import importlib
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the training scripts sit beside this file
import common  # noqa: E402

ARCHS = ("vanilla_gan", "dcgan", "wgan", "wgan_gp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", required=True, metavar="PATH",
                   help="checkpoint file(s), or a run folder (models/<name>: its last.pt)")
    p.add_argument("--n", type=common.positive_int, default=64, help="number of samples")
    p.add_argument("--nrow", type=common.positive_int, default=8, help="images per grid row")
    p.add_argument("--seed", type=int, default=0, help="fixes z (and so the samples)")
    p.add_argument("--out", default=None, help="output .png (or .gif with --interpolate); default "
                   "results/<name>/eval_<checkpoint>.png beside the run")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--batch-size", type=common.positive_int, default=250, help="samples per forward pass")
    p.add_argument("--label", default=None, help="class to generate (index or name), conditional checkpoints")
    p.add_argument("--interpolate", action="store_true", help="latent walk: each row goes from one z to another")
    p.add_argument("--steps", type=common.positive_int, default=10, help="images per walk (--interpolate)")
    p.add_argument("--save-dir", default=None, help="also write the N samples as PNG files at the dataset's "
                   "native size (e.g. 28x28 for MNIST), as uint8, the way metrics see them")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------- checkpoints
def load_generator(path, device):
    """-> (G in eval mode, checkpoint dict). Works for any arch in ARCHS, trained on any device."""
    ck = common.load_checkpoint(path, map_location="cpu")
    if ck.get("arch") not in ARCHS:
        raise common.UserError(f"{ck['path']}: unknown arch {ck.get('arch')!r} (this ganzoo knows {', '.join(ARCHS)})")
    try:
        module = importlib.import_module(ck["arch"])
    except ImportError:
        raise common.UserError(f"{ck['path']}: needs {ck['arch']}.py, which is not beside eval.py") from None
    try:
        G = module.Generator(**ck["model_args"])
        G.load_state_dict(ck["G"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise common.UserError(f"{ck['path']}: its generator does not match {ck['arch']}.py "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    return G.to(device).eval(), ck


def n_classes(ck):
    return ck["model_args"].get("n_classes", 0)


def parse_label(label, ck):
    """--label as an index or a class name -> int; a clear error listing the classes otherwise."""
    if label is None:
        return None
    if not n_classes(ck):
        raise common.UserError(f"{ck['path']} is unconditional: --label needs a checkpoint trained with "
                               "--conditional", 2)
    classes = [str(c) for c in ck["classes"]]
    listing = ", ".join(f"{i}={c}" for i, c in enumerate(classes))
    if label in classes:
        return classes.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(classes):
        return int(label)
    raise common.UserError(f"--label {label!r} is not a class of {ck['path']}: {listing}", 2)


# ---------------------------------------------------------------------------------------------------- sampling
def latents(n, dim, seed, block=1000):
    """z for sample i depends only on (seed, i): the same on every device and for every --n and --batch-size.
    Drawn in blocks of a fixed size, because randn(n, dim) is not a prefix of randn(2n, dim) on the CPU."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(block, dim, generator=g) for _ in range(-(-n // block))])[:n]


@torch.no_grad()
def generate(G, z, labels, device, batch_size=250):
    """-> images in [-1, 1], on the CPU."""
    out = []
    for i in range(0, len(z), batch_size):
        y = None if labels is None else labels[i:i + batch_size].to(device)
        out.append(G(z[i:i + batch_size].to(device), y).float().cpu())
    return torch.cat(out)


def sample_labels(ck, n, label=None):
    """Class-balanced labels (i mod n_classes) for conditional checkpoints, all `label` when one is given."""
    if not n_classes(ck):
        return None
    return torch.full((n,), label) if label is not None else torch.arange(n) % n_classes(ck)


def native_uint8(x, ck):
    """Samples in [-1, 1] at training size -> uint8 at the dataset's native size (the inverse of what training
    did to the files: crop the pad, or resize back), the form the real images have on disk."""
    d = ck["data"]
    return common.to_native_size(common.to_uint8(x), d["native_size"], d["mapping"])


def save_pngs(x_uint8, folder):
    from PIL import Image
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(x_uint8):
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(folder / f"{i:06d}.png")


def slerp(z0, z1, t):
    """Spherical interpolation: Gaussian z live near a sphere, and a straight line between two of them passes
    through low-norm z that G rarely saw (White 2016, "Sampling Generative Networks")."""
    omega = torch.acos((z0 / z0.norm(dim=1, keepdim=True) * z1 / z1.norm(dim=1, keepdim=True)).sum(1).clamp(-1, 1))
    so = torch.sin(omega).clamp_min(1e-8)[:, None]
    return torch.sin((1 - t) * omega)[:, None] / so * z0 + torch.sin(t * omega)[:, None] / so * z1


def default_out(ck, suffix):
    """results/<name>/eval_<stem><suffix> beside a run laid out as <root>/models/<name>/, else beside the file."""
    p = Path(ck["path"])
    if p.parent.parent.name == "models":
        return p.parent.parent.parent / "results" / p.parent.name / f"eval_{p.stem}{suffix}"
    return p.with_name(f"{p.stem}_samples{suffix}")


def title(ck):
    return f"{ck['args']['name']}  epoch {ck['epoch']}  (step {ck['step']})"


def sample_grid(args, device):
    G, ck = load_generator(args.ckpt[0], device)
    label = parse_label(args.label, ck)
    dim = ck["model_args"]["latent_dim"]
    if args.interpolate:
        rows = max(1, args.n // args.steps)
        z0, z1 = latents(2 * rows, dim, args.seed).chunk(2)
        t = torch.linspace(0, 1, args.steps)
        z = torch.stack([slerp(z0, z1, ti.expand(rows)) for ti in t], 1).flatten(0, 1)  # (rows*steps, dim)
        y = None if not n_classes(ck) else (torch.full((rows,), label) if label is not None
                                            else torch.arange(rows) % n_classes(ck)).repeat_interleave(args.steps)
        x = generate(G, z, y, device, args.batch_size)
        out = Path(args.out or default_out(ck, "_walk.png"))
        if out.suffix.lower() == ".gif":  # one frame per step, there and back
            x = x.view(rows, args.steps, *x.shape[1:])
            tmp = out.with_name(f".{out.stem}_frames")
            frames = [common.save_grid(x[:, i], tmp / f"{i:03d}.png", nrow=rows) for i in range(args.steps)]
            common.save_gif(frames + frames[-2:0:-1], out, ms=120)
            for f in frames:
                f.unlink()
            tmp.rmdir()
        else:
            common.save_grid(x, out, nrow=args.steps, title=title(ck) + "  latent walk")
        return out
    if n_classes(ck) and label is None:  # one row per class, the same z in each column
        per = max(1, args.n // n_classes(ck))
        z = latents(per, dim, args.seed).repeat(n_classes(ck), 1)
        y = torch.arange(n_classes(ck)).repeat_interleave(per)
        x = generate(G, z, y, device, args.batch_size)
        out = Path(args.out or default_out(ck, ".png"))
        common.save_grid(x, out, nrow=per, row_labels=[str(c) for c in ck["classes"]], title=title(ck))
        return out
    x = generate(G, latents(args.n, dim, args.seed), sample_labels(ck, args.n, label), device, args.batch_size)
    suffix = "" if label is None else f"_{ck['classes'][label]}".replace("/", "-")
    out = Path(args.out or default_out(ck, f"{suffix}.png"))
    common.save_grid(x, out, nrow=args.nrow, title=title(ck) + (f"  class {ck['classes'][label]}" if suffix else ""))
    return out


def compare_figure(args, device):
    """One titled row per checkpoint, the same z (and labels) in every row where the latent sizes match."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    rows = []
    for path in args.ckpt:
        G, ck = load_generator(path, device)
        label = parse_label(args.label, ck) if args.label is not None and n_classes(ck) else None
        z = latents(args.nrow, ck["model_args"]["latent_dim"], args.seed)
        x = generate(G, z, sample_labels(ck, args.nrow, label), device, args.batch_size)
        rows.append((title(ck), make_grid(x, nrow=args.nrow, normalize=True, value_range=(-1, 1), pad_value=1)))
    w = max(g.shape[2] for _, g in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(6, w / 40), 1.0 + 1.3 * len(rows)), squeeze=False)
    for ax, (name, grid) in zip(axes[:, 0], rows):
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(name, fontsize=9, loc="left")
        ax.axis("off")
    fig.tight_layout()
    out = Path(args.out or Path(args.ckpt[0]).resolve().parent / "compare.png")
    common.atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out


def save_samples(args, device):
    """--save-dir: the N samples exactly as the metrics see them (native size, uint8 PNG)."""
    G, ck = load_generator(args.ckpt[0], device)
    label = parse_label(args.label, ck)
    x = generate(G, latents(args.n, ck["model_args"]["latent_dim"], args.seed), sample_labels(ck, args.n, label),
                 device, args.batch_size)
    save_pngs(native_uint8(x, ck), args.save_dir)
    return Path(args.save_dir)


def main(argv=None):
    args = parse_args(argv)
    device = common.get_device(args.device)
    if args.save_dir:
        print(f"{args.n} samples ({'x'.join(map(str, _native_shape(args.ckpt[0])))}, uint8 PNG) in "
              f"{save_samples(args, device)}/")
    if len(args.ckpt) > 1:
        print(f"comparison of {len(args.ckpt)} checkpoints: {compare_figure(args, device)}")
    elif not args.save_dir or args.out or args.interpolate:
        print(f"samples: {sample_grid(args, device)}")


def _native_shape(path):
    ck = common.load_checkpoint(path)
    return [ck["image_shape"][0], ck["data"]["native_size"], ck["data"]["native_size"]]


if __name__ == "__main__":
    common.cli(main)
