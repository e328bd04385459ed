"""Why did vanilla_gan.py collapse on MNIST? Each candidate trains the real script for --epochs on MNIST with one
thing changed towards the paper (or the well-known fix), then benchmarks/coverage.py scores every epoch's samples
(1.0 = all ten digits equally often, 0.10 = one digit). The table is the study behind vanilla_gan.py's choices.

Candidates (the paper's details come from the authors' mnist.yaml, github.com/goodfeli/adversarial):
  adam       Adam(2e-4, betas (0.5, 0.999)), PyTorch's default initialisation: the script before the study
  sgd        the paper's optimiser: SGD, lr 0.1 decayed by 1.000004 a step, momentum 0.5 (rising to 0.7 over 250
             epochs: still 0.5 at epoch 5)
  init       the authors' initialisation: weights uniform in +-0.05 (G) and +-0.005 (D), biases 0
  maxout     D of maxout units (240 units of 5 pieces per layer), as the paper
  marginals  G's output bias set so that G starts at the data's mean image (the authors' sigmoid output layer)
  uniform    z uniform on [-sqrt 3, sqrt 3] (mnist.yaml's noise) instead of N(0, 1)
  paper      all five above together: the paper's setup
  batchnorm  BatchNorm after G's hidden layers (not in the paper; what DCGAN later showed)
  he         G's weights from He et al. 2015's normal for ReLU layers, std sqrt(2 / fan_in), biases 0 (not in the
             paper: a year later), so that z's signal keeps its scale through G's layers
  leaky      LeakyReLU(0.2) in G instead of ReLU (not in the paper)
  ttur       D's learning rate 4e-4, G's 1e-4 (Heusel et al. 2017's two time-scale rule; not in the paper)
  unit       D reads pixels in [0, 1] (the paper's range) instead of [-1, 1], so that its input dropout blanks
             pixels to the black background instead of greying them
  bn_d       BatchNorm after D's hidden layers too (DCGAN's D has it; D then sees each batch's statistics, real
             and fake apart, so a fake batch short of variety stands out)
Several, comma-separated, combine: --candidates init,marginals.

    python benchmarks/mlp_gan_collapse.py --candidates adam,sgd,init,maxout,marginals,uniform,paper,batchnorm
    python benchmarks/mlp_gan_collapse.py --candidates init --seeds 0,1,2 --json collapse.json
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "benchmarks"))
import common  # noqa: E402
import vanilla_gan  # noqa: E402

CANDIDATES = ("adam", "sgd", "init", "maxout", "marginals", "uniform", "paper", "batchnorm", "he", "leaky", "ttur",
              "bn_d", "unit")


class BeforeGenerator(vanilla_gan.Generator):
    """G as it was before the study (the base every candidate changes): the paper's two ReLU layers of 1200 units
    and a Tanh output, no BatchNorm."""

    def __init__(self, latent_dim, channels, image_size, n_classes=0, width=1200):
        super().__init__(latent_dim, channels, image_size, n_classes, width)
        self.net = nn.Sequential(nn.Linear(latent_dim + n_classes, width), nn.ReLU(inplace=True),
                                 nn.Linear(width, width), nn.ReLU(inplace=True),
                                 nn.Linear(width, channels * image_size * image_size), nn.Tanh())


class BeforeDiscriminator(vanilla_gan.Discriminator):
    """D as it was before the study: two layers of 1200 LeakyReLU(0.2) units (standing in for the paper's 240
    maxout units of 5 pieces) with the paper's dropout."""

    def __init__(self, channels, image_size, n_classes=0, width=1200):
        super().__init__(channels, image_size, n_classes, width)
        self.net = nn.Sequential(nn.Dropout(0.2), nn.Linear(channels * image_size * image_size + n_classes, width),
                                 nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.5), nn.Linear(width, width),
                                 nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.5), nn.Linear(width, 1))

    def forward(self, x, y=None):  # pixels in [-1, 1], as before the study
        return super().forward(2 * x - 1, y)  # vanilla_gan's D maps x to (x + 1) / 2: this undoes it


def patch(names, data_root, G_cls=BeforeGenerator, D_cls=BeforeDiscriminator):
    """Change vanilla_gan's networks or optimiser in this process, for the candidates in `names`, starting from
    the networks before the study; batchnorm+maxout+unit is what vanilla_gan.py ships (up to G's biases before
    BatchNorm, which it cancels)."""
    names = set(CANDIDATES[1:6]) if "paper" in names else set(names)

    class Generator(G_cls):
        def __init__(self, latent_dim, channels, image_size, n_classes=0, width=1200):
            super().__init__(latent_dim, channels, image_size, n_classes, width)
            if "batchnorm" in names:  # Linear, BatchNorm1d, ReLU per hidden layer
                layers = list(self.net)
                self.net = nn.Sequential(layers[0], nn.BatchNorm1d(width), layers[1], layers[2],
                                         nn.BatchNorm1d(width), *layers[3:])
            if "init" in names:
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.uniform_(m.weight, -0.05, 0.05)
                        nn.init.zeros_(m.bias)
            if "he" in names:
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                        nn.init.zeros_(m.bias)
            if "leaky" in names:
                self.net = nn.Sequential(*[nn.LeakyReLU(0.2) if isinstance(m, nn.ReLU) else m for m in self.net])
            if "marginals" in names:  # tanh(b) = the mean training pixel, clipped away from +-1
                train = common.load_dataset("mnist", data_root, image_size)
                mean = common.normalize(train.images).mean(0).flatten().clamp(-0.998, 0.998)
                out = [m for m in self.modules() if isinstance(m, nn.Linear)][-1]
                with torch.no_grad():
                    out.bias.copy_(torch.atanh(mean))

        def forward(self, z, y=None):
            if "uniform" in names:  # N(0, 1) -> U(-sqrt 3, sqrt 3) through the normal CDF: z of unit variance
                z = math.sqrt(3) * torch.erf(z / math.sqrt(2))
            return super().forward(z, y)

    class Discriminator(D_cls):
        def __init__(self, channels, image_size, n_classes=0, width=1200):
            super().__init__(channels, image_size, n_classes, width)
            if "bn_d" in names:  # Dropout, Linear, BatchNorm1d, LeakyReLU per hidden layer
                layers = list(self.net)
                self.net = nn.Sequential(*layers[:2], nn.BatchNorm1d(width), *layers[2:5], nn.BatchNorm1d(width),
                                         *layers[5:])
            if "maxout" in names:
                n_in = channels * image_size * image_size + n_classes
                self.net = nn.Sequential(nn.Dropout(0.2), vanilla_gan.Maxout(n_in, 240), nn.Dropout(0.5),
                                         vanilla_gan.Maxout(240, 240), nn.Dropout(0.5), nn.Linear(240, 1))
            if "init" in names:
                for m in self.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.uniform_(m.weight, -0.005, 0.005)
                        nn.init.zeros_(m.bias)

        def forward(self, x, y=None):
            return super().forward((x + 1) / 2 if "unit" in names else x, y)  # "unit": D's net sees (x + 1) / 2

    vanilla_gan.Generator, vanilla_gan.Discriminator = Generator, Discriminator
    if "ttur" in names:  # main() builds G's optimizer first, then D's
        adam, made = torch.optim.Adam, []

        def two_rates(params, **kw):
            made.append(1)
            return adam(params, **{**kw, "lr": 1e-4 if len(made) == 1 else 4e-4})
        torch.optim.Adam = two_rates
    if "sgd" in names:
        torch.optim.Adam = lambda params, **kw: torch.optim.SGD(params, lr=0.1, momentum=0.5)
        real_step = vanilla_gan.train_step

        def train_step(G, D, opt_G, opt_D, *rest, **kw):
            stats = real_step(G, D, opt_G, opt_D, *rest, **kw)
            for opt in (opt_G, opt_D):  # mnist.yaml's ExponentialDecay: lr / 1.000004 every step, at least 1e-6
                for group in opt.param_groups:
                    group["lr"] = max(group["lr"] / 1.000004, 1e-6)
            return stats
        vanilla_gan.train_step = train_step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="names or name+name+... (combined), "
                   "comma-separated")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--data-root", default="data")
    p.add_argument("--out", default=str(HERE / "runs_collapse"), help="where the runs go")
    p.add_argument("--json", default=None)
    p.add_argument("--train", default=None, help=argparse.SUPPRESS)  # one candidate's run, in a subprocess
    argv = sys.argv[1:]
    script_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.train:
        patch(args.train.split("+"), args.data_root)
        common.cli(lambda: vanilla_gan.main(script_argv))
        return
    from coverage import measure
    rows = []
    for cand in args.candidates.split(","):
        for seed in args.seeds.split(","):
            name = f"{cand.replace('+', '_')}_s{seed}"
            models = Path(args.out) / "models" / name
            log = Path(args.out) / f"{name}.log"
            if not (models / f"epoch_{args.epochs:03d}.pt").exists() and not log.exists():
                with open(log, "w") as f:  # a candidate that diverges stops with its one-line error: recorded
                    subprocess.run([sys.executable, __file__, "--train", cand, "--data-root", args.data_root, "--",
                                    "--data-root", args.data_root, "--dataset", "mnist", "--epochs", str(args.epochs),
                                    "--seed", seed, "--out", args.out, "--name", name], stderr=f, stdout=f)
            diverged = [l for l in log.read_text().splitlines() if l.startswith("error:")] if log.exists() else []
            originals = vanilla_gan.Generator, vanilla_gan.Discriminator, vanilla_gan.train_step, torch.optim.Adam
            patch(cand.split("+"), args.data_root)  # eval.py rebuilds G from vanilla_gan: the candidate's own
            for e in range(1, args.epochs + 1):
                if not (models / f"epoch_{e:03d}.pt").exists():
                    break
                r = measure(models / f"epoch_{e:03d}.pt", 1000, 0, args.data_root, torch.device("cpu"))
                rows.append({"candidate": cand, "seed": int(seed), "epoch": e, "coverage": r["coverage"],
                             "counts": r["counts"], "train_seconds": torch.load(
                                 models / f"epoch_{e:03d}.pt", weights_only=True)["train_seconds"]})
            vanilla_gan.Generator, vanilla_gan.Discriminator, vanilla_gan.train_step, torch.optim.Adam = originals
            mine = [r for r in rows if (r["candidate"], r["seed"]) == (cand, int(seed))]
            by_epoch = " ".join(f"{r['coverage']:.2f}" for r in mine) or "-"
            last = mine[-1]["counts"] if mine else "-"
            print(f"{cand:<24} seed {seed}: coverage by epoch {by_epoch}; last {last}"
                  + (f"; then {diverged[-1]}" if diverged else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
