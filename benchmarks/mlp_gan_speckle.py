"""Where does vanilla_gan.py's speckle on Fashion-MNIST come from? Its garments have the right silhouettes but
every one is speckled inside, at epoch 5 and still at epoch 20. Each candidate trains the real script for --epochs
on --dataset (Fashion-MNIST unless told) with one thing changed, then eval.py measures FID (N = 2000, against the
test split) and one figure shows each candidate's first grid rows, to look at: FID alone does not say whether the
speckle is gone.

Candidates:
  shipped           vanilla_gan.py as it is
  no_input_dropout  D's input dropout (p = 0.2, which blanks pixels of a grey garment to black) at 0
  no_dropout        all three of D's dropouts at 0
  lr_1e-4           half the learning rate of G and D (--lr 1e-4)
  d_steps_2         two D updates per G update (--d-steps 2)
  width_2400        twice the width of G's layers and of D's (--width 2400)
  deep_d            a third layer of maxout units in D (with dropout 0.5 before it, as the second has)
  conv_d            D replaced by DCGAN's convolutional D (dcgan.py's, at its defaults); G the MLP
  conv_g            G replaced by DCGAN's convolutional G; D the maxout MLP

    python benchmarks/mlp_gan_speckle.py                                   # all (~2 h on 2 CPU cores)
    python benchmarks/mlp_gan_speckle.py --dataset mnist --candidates shipped,conv_d
    python benchmarks/mlp_gan_speckle.py --dataset cifar10 --candidates shipped,no_dropout,conv_d
    python benchmarks/mlp_gan_speckle.py --candidates shipped,conv_d --ref ../shared/fid/fashion-mnist-test-10k.npz
"""
import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import dcgan  # noqa: E402
import eval as ev  # noqa: E402
import vanilla_gan  # noqa: E402

CANDIDATES = {"shipped": [], "no_input_dropout": [], "no_dropout": [], "lr_1e-4": ["--lr", "1e-4"],
              "d_steps_2": ["--d-steps", "2"], "width_2400": ["--width", "2400"], "deep_d": [], "conv_d": [],
              "conv_g": []}


def patch(name):
    """Swap vanilla_gan's networks in this process for the candidate's (for its training, and for eval.py, which
    rebuilds G from vanilla_gan)."""
    if name == "conv_d":
        vanilla_gan.Discriminator = lambda channels, image_size, n_classes=0, width=0: dcgan.Discriminator(
            channels, image_size, n_classes)
    elif name == "conv_g":
        vanilla_gan.Generator = lambda latent_dim, channels, image_size, n_classes=0, width=0: dcgan.Generator(
            latent_dim, channels, image_size, n_classes)
    elif name in ("no_input_dropout", "no_dropout"):
        class Discriminator(vanilla_gan.Discriminator):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                dropouts = [m for m in self.net if isinstance(m, torch.nn.Dropout)]
                for m in dropouts[:1] if name == "no_input_dropout" else dropouts:
                    m.p = 0.0
        vanilla_gan.Discriminator = Discriminator
    elif name == "deep_d":
        class Discriminator(vanilla_gan.Discriminator):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                # after the second maxout layer (net[3]): the shipped layers are initialised as they are shipped
                units = self.net[3].units
                self.net.insert(4, vanilla_gan.Maxout(units, units))
                self.net.insert(4, torch.nn.Dropout(p=0.5))
        vanilla_gan.Discriminator = Discriminator


def figure(rows, out, cells_rows=2):
    """Each candidate's last epoch grid, its first `cells_rows` rows of 8, two candidates a row."""
    from matplotlib.figure import Figure
    from PIL import Image
    fig = Figure(figsize=(8, 1.35 * -(-len(rows) // 2)))
    axes = fig.subplots(-(-len(rows) // 2), 2, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for ax, r in zip(axes, rows):
        grid = Image.open(r["grid"])
        top = grid.height - grid.width  # the epoch label above the square grid
        ax.imshow(grid.crop((0, top, grid.width, top + grid.width * cells_rows // 8)), cmap="gray")
        ax.set_title(f"{r['candidate']}: FID {r['fid']:.1f}", fontsize=9, loc="left")
    fig.tight_layout()
    common.atomic_write(Path(out), lambda t: fig.savefig(t, dpi=100, format="png"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, from: " + ", ".join(CANDIDATES))
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist", "cifar10"), default="fashion-mnist",
                   help="Fashion-MNIST is the question; MNIST and CIFAR-10 (where the MLP GAN fails: D at chance by "
                   "epoch 5, FID 321 at epoch 25) see the same candidates there")
    p.add_argument("--epochs", type=common.positive_int, default=5)
    p.add_argument("--n", type=common.positive_int, default=2000, help="samples per FID")
    p.add_argument("--ref", default=None, help="a pytorch-fid .npz of the test split (default: eval.py computes and "
                   "caches the test split's statistics)")
    p.add_argument("--data-root", default="data")
    p.add_argument("--out", default=str(HERE / "runs_speckle"), help="where the runs go (in <out>/<dataset>)")
    p.add_argument("--figure", default=None, help="the grids' figure (default: <out>/<dataset>/speckle.png)")
    p.add_argument("--json", default=None)
    p.add_argument("--train", default=None, help=argparse.SUPPRESS)  # one candidate's run, in a subprocess
    args = p.parse_args()
    out = Path(args.out) / args.dataset
    if args.train:  # a killed run goes on from its last checkpoint
        resume = ["--resume"] if (out / "models" / args.train / "last.pt").exists() else []
        patch(args.train)
        return vanilla_gan.main(["--dataset", args.dataset, "--epochs", str(args.epochs), "--data-root",
                                 args.data_root, "--out", str(out), "--name", args.train, *CANDIDATES[args.train],
                                 *resume])
    cands = args.candidates.split(",")
    if set(cands) - set(CANDIDATES):
        p.error(f"--candidates: unknown {', '.join(sorted(set(cands) - set(CANDIDATES)))}")
    rows, fids = [], out / "fids.json"  # each FID measured, by the weights': eval.py's samples are fixed
    done = json.loads(fids.read_text()) if fids.exists() else {}
    for cand in cands:
        ckpt = out / "models" / cand / f"epoch_{args.epochs:03d}.pt"
        if not ckpt.exists():  # trained in a process of its own, with this one's arguments
            rc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--train", cand]).returncode
            if rc:  # its own error line is above
                raise common.UserError(f"{cand}: its training run stopped (exit {rc}); finished candidates are kept")
        weights = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12]  # a run trained again is measured again
        key = f"{cand}, epoch {args.epochs} ({weights}), N = {args.n} against {args.ref or 'the test split'}"
        if key not in done:
            originals = vanilla_gan.Generator, vanilla_gan.Discriminator
            patch(cand)
            ev_args = ev.parse_args(["--ckpt", str(ckpt), "--metrics", "fid", "--n", str(args.n), "--device", "cpu",
                                     "--data-root", args.data_root, *(["--ref", args.ref] if args.ref else [])])
            ev_args.batch_size = ev.default_batch_size(torch.device("cpu"))
            done[key] = ev.measure(ev_args, torch.device("cpu"))[0]["fid"]
            vanilla_gan.Generator, vanilla_gan.Discriminator = originals
            common.atomic_write(fids, lambda t: Path(t).write_text(json.dumps(done, indent=1) + "\n"))
        ck = common.load_checkpoint(ckpt)
        rows.append({"candidate": cand, "fid": done[key], "n": args.n, "minutes": ck["train_seconds"] / 60,
                     "device": ck["device"], "grid": str(out / "results" / cand / f"epoch_{args.epochs:03d}.png")})
        print(f"{cand:<18} FID {done[key]:7.1f} (N = {args.n}) after {args.epochs} epochs, {rows[-1]['minutes']:.0f} "
              f"min of training; grid: {rows[-1]['grid']}", flush=True)
    figure(rows, args.figure or out / "speckle.png")
    print(f"figure: {args.figure or out / 'speckle.png'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    common.cli(main)
