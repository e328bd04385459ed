"""Sample from, compare and measure any ganzoo checkpoint.

The generator is rebuilt from the checkpoint alone (its arch name and model_args), by importing that script's
Generator; the file is read with torch.load(weights_only=True), so a checkpoint cannot run code.

    python eval.py --ckpt models/dcgan_mnist/epoch_005.pt                  # grid of 64 samples
    python eval.py --ckpt models/dcgan_mnist_cond --label 7                # a class (index or name)
    python eval.py --ckpt models/dcgan_mnist/epoch_00{1,3,5}.pt            # side by side, same noise
    python eval.py --ckpt models/dcgan_mnist --interpolate --out walk.gif  # latent-space walk
    python eval.py --ckpt models/dcgan_mnist --n 10000 --save-dir samples/ # PNG files for other tools
    python eval.py --ckpt models/dcgan_mnist/epoch_00*.pt --metrics fid,kid # FID and KID, 10k samples each
    python eval.py                                                         # the newest run's samples

Metrics use pytorch-fid's Inception and preprocessing for samples and reference alike, so FIDs match `python -m
pytorch_fid` and its .npz statistics; KID (Binkowski et al. 2018) uses the same features.
"""
import argparse
import hashlib
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common

ARCHS = ("vanilla_gan", "dcgan", "wgan", "wgan_gp", "lsgan", "sngan")
METRICS = ("fid", "kid")
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # the FID Inception file pytorch-fid downloads


def arg_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", nargs="+", default=None, metavar="PATH", help="checkpoint file(s), or a run folder "
                   "(models/<name>: its last.pt); None: the newest models/*/last.pt under the current folder")
    p.add_argument("--n", type=common.positive_int, default=None, help="samples; None: 64, 10000 with --metrics")
    p.add_argument("--nrow", type=common.positive_int, default=8, help="images per grid row")
    p.add_argument("--seed", type=int, default=0, help="fixes z (and so the samples)")
    p.add_argument("--out", default=None, help=".png (.gif: --interpolate); None: results/<name>/eval_<ckpt>.png")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="auto: cuda, mps, cpu")
    p.add_argument("--batch-size", type=common.positive_int, default=None, help="images per pass (G, Inception); "
                   "None: 10 on a CPU (fastest there: benchmarks/inception_speed.py), 200 on a GPU")
    p.add_argument("--label", default=None, help="class to generate (index or name), conditional checkpoints")
    p.add_argument("--raw", action="store_true", help="sample from G as trained, not from its average (--ema)")
    p.add_argument("--interpolate", action="store_true", help="latent walk: each row goes from one z to another")
    p.add_argument("--steps", type=common.positive_int, default=10, help="images per walk (--interpolate)")
    p.add_argument("--save-dir", default=None, help="also write the N samples as PNG files, as metrics see them "
                   "(uint8, the dataset's native size: 28x28 for MNIST)")
    m = p.add_argument_group("metrics (pytorch-fid's FID Inception: $TORCH_HOME/hub/checkpoints/" + WEIGHTS_NAME
                             + ", downloaded there when missing)")
    m.add_argument("--metrics", default=None, help=f"comma-separated subset of {','.join(METRICS)}")
    m.add_argument("--ref", default=None, help="reference: mnist|fashion-mnist|cifar10[:train|:test], an image "
                   "folder, or a pytorch-fid .npz of mu/sigma (FID only); None: the checkpoint's dataset, test split")
    m.add_argument("--ref-n", type=common.positive_int, default=10000, help="reference images (a fixed subset)")
    m.add_argument("--data-root", default=None, help="where --ref datasets live; None: the checkpoint's")
    m.add_argument("--bf16", action="store_true", help="APPROXIMATE: Inception in bfloat16, 3.5-4x faster with AMX, "
                   "FIDs up to 3%% off: to track a run, never to compare with published figures (labelled -bf16)")
    m.add_argument("--json", default=None, help="also write the metrics table as JSON to this file")
    m.add_argument("--plot", default=None, help="also plot FID against epoch to this .png")
    return p


def parse_args(argv=None):
    p = arg_parser()
    args = p.parse_args(argv)
    if args.metrics is not None:
        args.metrics = [x.strip().lower() for x in args.metrics.split(",") if x.strip()]
        bad = [x for x in args.metrics if x not in METRICS]
        if bad or not args.metrics:
            p.error(f"--metrics: unknown {', '.join(bad) or 'empty list'} (choose from {', '.join(METRICS)})")
    if args.ckpt is None:
        args.ckpt = [newest_run()]
    if len(args.ckpt) > 1 and (args.save_dir or args.interpolate):
        p.error("--save-dir and --interpolate take one checkpoint")
    args.n = args.n or (10000 if args.metrics else 64)
    return args


# ------------------------------------------------------------------------------------------------- checkpoints
def newest_run(root="."):
    """No --ckpt: the most recently written models/*/last.pt under root, said on stderr."""
    runs = sorted(Path(root).glob("models/*/last.pt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise common.UserError(f"no --ckpt given and no models/*/last.pt under {Path(root).resolve()}: train a model "
                               "first (python dcgan.py ...), or pass --ckpt PATH", 2)
    print(f"no --ckpt: taking the newest run, {runs[-1]} (written {time.ctime(runs[-1].stat().st_mtime)})",
          file=sys.stderr)
    return str(runs[-1])


def load_generator(path, device, raw=False):
    """-> (G in eval mode, checkpoint dict), any arch in ARCHS, trained on any device: the average of G's weights
    where the checkpoint holds one (G_ema), else (or when raw) G as trained; ck['ema'] says which (0: G)."""
    ck = common.load_checkpoint(path, map_location="cpu")
    if ck.get("arch") not in ARCHS:
        raise common.UserError(f"{ck['path']}: unknown arch {ck.get('arch')!r} (this ganzoo knows {', '.join(ARCHS)})")
    ema = {k.removeprefix("module."): v for k, v in ck.get("G_ema", {}).items() if k != "n_averaged"}
    ck["ema"] = 0 if raw or not ema else ck["args"].get("ema", 0)  # (a checkpoint from before --ema has none)
    try:
        G = importlib.import_module(ck["arch"]).Generator(**ck["model_args"])
        G.load_state_dict(ema if ck["ema"] else ck["G"])
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
    if label in classes:
        return classes.index(label)
    if label.lstrip("-").isdigit() and 0 <= int(label) < len(classes):
        return int(label)
    raise common.UserError(f"--label {label!r} is not a class of {ck['path']}: "
                           + ", ".join(f"{i}={c}" for i, c in enumerate(classes)), 2)


def title(ck):
    """Run, epoch, step, and G's updates where there is one every d_steps steps (WGANs): what G has had."""
    d_steps = ck["args"].get("d_steps", ck["args"].get("n_critic", 1))  # n_critic: checkpoints before --d-steps
    g = ck["step"] // d_steps
    return f"{ck['args']['name']}  epoch {ck['epoch']}  (step {ck['step']}" + \
        (f", {g} G update{'s' * (g != 1)}" if d_steps > 1 else "") + (f", EMA {ck['ema']})" if ck.get("ema") else ")")


# ---------------------------------------------------------------------------------------------------- sampling
def latents(n, dim, seed, block=1000):
    """z for sample i depends only on (seed, i): the same on every device and for every --n and --batch-size.
    Drawn in blocks of a fixed size, because randn(n, dim) is not a prefix of randn(2n, dim) on the CPU."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(block, dim, generator=g) for _ in range(-(-n // block))])[:n]


@torch.no_grad()
def generate(G, z, labels, device, batch_size=250, desc=None):
    """-> images in [-1, 1], on the CPU; a progress bar when desc is given."""
    from tqdm import tqdm
    out = []
    for i in tqdm(range(0, len(z), batch_size), desc=desc, unit="batch", leave=False, disable=desc is None):
        y = None if labels is None else labels[i:i + batch_size].to(device)
        out.append(G(z[i:i + batch_size].to(device), y).float().cpu())
    return torch.cat(out)


def samples(G, ck, args, device, label=None, desc=None):
    """args.n samples in [-1, 1] from args.seed's z: class-balanced for a conditional G, or all of class `label`."""
    z = latents(args.n, ck["model_args"]["latent_dim"], args.seed)
    return generate(G, z, sample_labels(ck, args.n, label), device, args.batch_size, desc)


def sample_labels(ck, n, label=None):
    """Class-balanced labels (i mod n_classes) for conditional checkpoints, all `label` when one is given."""
    if not n_classes(ck):
        return None
    return torch.full((n,), label) if label is not None else torch.arange(n) % n_classes(ck)


def native_uint8(x, ck):
    """Samples in [-1, 1] -> uint8 at the dataset's native size (the pad cropped, or resized back), as on disk."""
    return common.to_native_size(common.to_uint8(x), ck["data"]["native_size"], ck["data"]["mapping"])


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


def sample_grid(args, device):
    """One checkpoint's figure: a grid (one labelled row per class when conditional), or a latent walk."""
    G, ck = load_generator(args.ckpt[0], device, args.raw)
    label, dim = parse_label(args.label, ck), ck["model_args"]["latent_dim"]
    if args.interpolate:
        rows = max(1, args.n // args.steps)
        z0, z1 = latents(2 * rows, dim, args.seed).chunk(2)
        z = torch.stack([slerp(z0, z1, t.expand(rows)) for t in torch.linspace(0, 1, args.steps)], 1).flatten(0, 1)
        y = sample_labels(ck, rows, label)
        x = generate(G, z, None if y is None else y.repeat_interleave(args.steps), device, args.batch_size)
        out = Path(args.out or default_out(ck, "_walk.png"))
        if out.suffix.lower() != ".gif":
            return common.save_grid(x, out, nrow=args.steps, title=title(ck) + "  latent walk")
        x = x.view(rows, args.steps, *x.shape[1:])  # a GIF: one frame per step, there and back
        frames = [common.save_grid(x[:, i], out.with_name(f".{out.stem}_{i:03d}.png"), nrow=rows)
                  for i in range(args.steps)]
        common.save_gif(frames + frames[-2:0:-1], out, ms=120)
        for f in frames:
            f.unlink()
        return out
    if n_classes(ck) and label is None:  # one row per class, the same z in each column
        per = max(1, args.n // n_classes(ck))
        z = latents(per, dim, args.seed).repeat(n_classes(ck), 1)
        x = generate(G, z, torch.arange(n_classes(ck)).repeat_interleave(per), device, args.batch_size)
        return common.save_grid(x, Path(args.out or default_out(ck, ".png")), nrow=per,
                                row_labels=[str(c) for c in ck["classes"]], title=title(ck))
    x = samples(G, ck, args, device, label)
    suffix = "" if label is None else f"_{ck['classes'][label]}".replace("/", "-")
    return common.save_grid(x, Path(args.out or default_out(ck, f"{suffix}.png")), nrow=args.nrow,
                            title=title(ck) + (f"  class {ck['classes'][label]}" if suffix else ""))


def compare_figure(args, device, row_titles=None):
    """A row per checkpoint, titled (row_titles, or run, epoch and step), the same z where latent sizes match."""
    rows, titles = [], []
    for path in args.ckpt:
        G, ck = load_generator(path, device, args.raw)
        label = parse_label(args.label, ck) if args.label is not None and n_classes(ck) else None
        z = latents(args.nrow, ck["model_args"]["latent_dim"], args.seed)
        x = generate(G, z, sample_labels(ck, args.nrow, label), device, args.batch_size)
        rows.append(torch.nn.functional.interpolate(x, size=64).expand(-1, 3, -1, -1))  # any size, grey or RGB
        titles.append(title(ck).replace("  ", "\n", 1))
    out = Path(args.out or default_out(ck, "_compare.png"))  # beside the last checkpoint's run
    return common.save_grid(torch.cat(rows), out, nrow=args.nrow, row_labels=row_titles or titles)


def save_samples(args, device):
    """--save-dir: the N samples exactly as the metrics see them (native size, uint8 PNG)."""
    from PIL import Image
    G, ck = load_generator(args.ckpt[0], device, args.raw)
    x = native_uint8(samples(G, ck, args, device, parse_label(args.label, ck)), ck)
    folder = Path(args.save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(folder / f"{i:06d}.png")
    return folder, "x".join(map(str, x.shape[1:]))


# ------------------------------------------------------------------------------------------------------ metrics
def feature_extractor(device, bf16=False):
    """-> (f, name): f maps float (B, 3, H, W) in [0, 1] to pool3 features (B, 2048) as pytorch-fid does (bilinear
    resize to 299, 2x - 1, its FID Inception, weights from torch.hub's cache: $TORCH_HOME/hub/checkpoints/, where
    pytorch-fid downloads them when missing); name identifies the network (and bf16) for cache keys."""
    try:
        from pytorch_fid.inception import InceptionV3
    except ImportError:
        raise common.UserError("--metrics needs pytorch-fid: pip install pytorch-fid") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(device, memory_format=torch.channels_last)
    except Exception as e:  # no file and no network (URLError...), or a file that is not the network's weights
        raise common.UserError(f"the FID Inception weights could not be loaded ({type(e).__name__}): put "
                               f"{WEIGHTS_NAME} in {path.parent} (or point $TORCH_HOME elsewhere)") from None
    name = f"pytorch-fid-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}" + ("-bf16" if bf16 else "")

    @torch.no_grad()
    def f(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x.to(device, memory_format=torch.channels_last))[0].flatten(1).float().cpu()
    return f, name


def features(extract, images, batch_size, desc):
    """uint8 (N, C, H, W), C = 1 or 3 -> float32 numpy (N, D). Grey is repeated to 3 channels, as PIL's
    convert('RGB') does for pytorch-fid's image files; /255 is its ToTensor."""
    from tqdm import tqdm
    out = [extract((x.float() / 255).expand(-1, 3, -1, -1))
           for x in tqdm(images.split(batch_size), desc=desc, unit="batch", leave=False)]
    return torch.cat(out).numpy()


def stats(f):
    return f.mean(0, dtype=np.float64), np.cov(f, rowvar=False)  # (np.cov computes in float64)


def fid_from_stats(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """The Frechet distance of two Gaussians (Heusel et al. 2017): |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), as
    pytorch-fid's calculate_frechet_distance (its eps offset, the root's real part), whose SciPy call 1.18 broke."""
    from scipy import linalg  # scipy comes with pytorch-fid
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):  # rounding leaves tiny imaginary parts; a large one means broken statistics
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.abs(covmean.imag).max()} in (S1 S2)^1/2")
        covmean = covmean.real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kid(f1, f2, subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 estimator with the kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets. -> (mean, std)."""
    rng = np.random.default_rng(seed)
    m, d = min(len(f1), len(f2), subset_size), f1.shape[1]
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)].astype(np.float64)
        y = f2[rng.choice(len(f2), m, replace=False)].astype(np.float64)
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        # off-diagonal means for the within-set terms (i != j): that is what makes the estimator unbiased
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def reference(spec, ck, args, extract, name):
    """-> {'label', 'mu', 'sigma', 'feats' (None for an .npz), 'n'}; features cached under cache_dir()/fid."""
    d = ck["data"]
    spec = spec or (f"{d['dataset']}:test" if d["dataset"] != "folder" else d["source"])
    if spec.endswith(".npz"):
        if not Path(spec).is_file():
            raise common.UserError(f"--ref {spec}: no such file", 2)
        with np.load(spec) as z:
            if "mu" not in z or "sigma" not in z:
                raise common.UserError(f"--ref {spec}: not pytorch-fid statistics (needs arrays mu and sigma)", 2)
            return {"label": spec, "mu": z["mu"], "sigma": z["sigma"], "feats": None, "n": None}
    dataset, _, split = spec.partition(":")
    if dataset in ("mnist", "fashion-mnist", "cifar10") and split in ("", "train", "test"):
        root, split = args.data_root or ck["args"].get("data_root", "data"), split or "test"
    elif Path(spec).is_dir():
        root, dataset, split = spec, "folder", "train"
    else:
        raise common.UserError(f"--ref {spec!r}: give mnist|fashion-mnist|cifar10[:train|:test], an image folder "
                               "or an .npz", 2)
    feats = reference_features(dataset, split, root, d["native_size"], args, extract, name)
    mu, sigma = stats(feats)
    return {"label": spec, "mu": mu, "sigma": sigma, "feats": feats, "n": len(feats)}


def reference_features(dataset, split, root, size, args, extract, name):
    """Features of at most --ref-n images of a dataset split or folder at the checkpoint's native size (a folder:
    resized and center-cropped as in training), a fixed random subset where there are more; cached."""
    key = hashlib.sha1(f"{dataset}:{split}@{Path(root).resolve()}|{size}|{args.ref_n}|{name}".encode()).hexdigest()
    path = common.cache_dir() / "fid" / f"{dataset}-{split}-{size}px-{key[:16]}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["feats"]
    data = common.load_dataset(dataset, root, size, split=split, workers=0)
    idx = torch.arange(len(data))
    if len(data) > args.ref_n:  # a fixed random subset, the same every time
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:args.ref_n]
    feats = features(extract, data.images[idx], args.batch_size, f"reference features {dataset}:{split}")
    common.atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), feats=feats))
    print(f"cached reference features: {path}", file=sys.stderr)
    return feats


def measure(args, device):
    """--metrics: one row per checkpoint (FID and/or KID of N samples), printed as a table; --json, --plot."""
    network = feature_extractor(device, args.bf16)
    if args.n < 10000:
        print(f"warning: N = {args.n} samples: FID is biased upward below N = 10000; compare figures only at the "
              "same N", file=sys.stderr)
    refs = {}  # each reference's statistics, computed once for all the checkpoints that use it
    rows = [measure_one(path, args, device, network, refs) for path in args.ckpt]
    print_table(rows)
    if args.json:
        common.atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2) + "\n"))
        print(f"json: {args.json}")
    if args.plot and "fid" in args.metrics:
        plot_fid(rows, args.plot)
        print(f"plot: {args.plot}")
    return rows


def measure_one(path, args, device, network, refs):
    """One checkpoint's row: its N samples, at native size as uint8, through the Inception network."""
    (extract, name), t0 = network, time.time()
    G, ck = load_generator(path, device, args.raw)
    d = ck["data"]
    key = (args.ref or f"{d['dataset']}:{d['source']}", d["native_size"])
    ref = refs[key] = refs.get(key) or reference(args.ref, ck, args, extract, name)
    row = {"checkpoint": ck["path"], "arch": ck["arch"], "dataset": d["dataset"], "epoch": ck["epoch"],
           "step": ck["step"], "n": args.n, "seed": args.seed, "feature_extractor": name, "ref": ref["label"],
           "ref_n": ref["n"], "ema": ck["ema"]}
    x = samples(G, ck, args, device, parse_label(args.label, ck), "generating")
    f = features(extract, native_uint8(x, ck), args.batch_size, f"features {Path(ck['path']).name}")
    if "fid" in args.metrics:
        row["fid"] = fid_from_stats(*stats(f), ref["mu"], ref["sigma"])
    if "kid" in args.metrics and ref["feats"] is None:
        print(f"note: KID needs reference features; {ref['label']} holds only mu/sigma: KID skipped", file=sys.stderr)
    elif "kid" in args.metrics:
        row["kid"], row["kid_std"] = kid(f, ref["feats"])
    row["seconds"] = round(time.time() - t0, 1)
    return row


def print_table(rows):
    print(f"{'checkpoint':<44} {'epoch':>5} {'N':>6} {'FID':>8} {'KID':>17} {'seconds':>8}")
    for r in rows:
        fid_s = f"{r['fid']:.2f}" if "fid" in r else "-"
        kid_s = f"{r['kid']:.4f} +- {r['kid_std']:.4f}" if "kid" in r else "-"
        print(f"{r['checkpoint'][-44:]:<44} {r['epoch']:>5} {r['n']:>6} {fid_s:>8} {kid_s:>17} {r['seconds']:>8.0f}")
    n = rows[0]["ref_n"]
    print(f"reference: {rows[0]['ref']} ({f'{n} images' if n else 'precomputed mu and sigma'}); "
          f"features: {rows[0]['feature_extractor']}")


def plot_fid(rows, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    runs = {}
    for r in rows:
        runs.setdefault(Path(r["checkpoint"]).parent.name, []).append((r["epoch"], r["fid"]))
    for name, pts in runs.items():
        ax.plot(*zip(*sorted(pts)), marker="o", label=name)
    ax.set(xlabel="epoch", ylabel=f"FID (N = {rows[0]['n']})", title="FID against epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    common.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def default_batch_size(device):
    # on a CPU small batches keep Inception's activations in cache: 14 img/s at 10 against 12 at 50 on 2 cores
    return 10 if device.type == "cpu" else 200


def main(argv=None):
    args = parse_args(argv)
    device = common.get_device(args.device)
    args.batch_size = args.batch_size or default_batch_size(device)
    if args.metrics:
        measure(args, device)
    if args.save_dir:
        folder, shape = save_samples(args, device)
        print(f"{args.n} samples ({shape}, uint8 PNG) in {folder}/")
    if not (args.save_dir or args.metrics) or args.out or args.interpolate:  # a figure, unless only numbers/files
        if len(args.ckpt) > 1:
            print(f"comparison of {len(args.ckpt)} checkpoints: {compare_figure(args, device)}")
        else:
            print(f"samples: {sample_grid(args, device)}")


if __name__ == "__main__":
    common.cli(main)
