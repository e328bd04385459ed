"""Which average of G's weights should samples come from? The scripts keep one (--ema: an exponential moving average
with a warm-up, Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"); one training run of a
script here keeps several beside G (torch.optim.swa_utils.AveragedModel). At the epochs asked for, each variant is
written as a checkpoint that eval.py reads (its G), and all are scored by FID (eval.py's, against the test split).

Training is the script's own main(), bit for bit: the averages read G after each of its updates and write nothing
back, so the run's own checkpoints are those of the same command without this benchmark (tested).

Variants (--variants, comma-separated):
  G                  G as trained, sampled with its BatchNorm running statistics (what the grids and the results
                     table use)
  G_bn               G with its BatchNorm statistics recomputed for its current weights (update_bn over fresh z):
                     the population statistics that batch statistics estimate at sampling time
  ema<decay>         an EMA of G's weights and of its running statistics (use_buffers=True) from G's first update
  ema<decay>_warm    the same with a warm-up: its n-th update keeps min(decay, (1 + n) / (10 + n)) of the average,
                     so that G's first, poor weights fade within a few hundred updates (the scripts' --ema decay)
  ..._bn             an EMA with its BatchNorm statistics recomputed for the averaged weights

    python benchmarks/ema.py --script dcgan --dataset cifar10 --epochs 25
    python benchmarks/ema.py --script dcgan --dataset mnist --epochs 5 --at 1,3,5 --json ema_mnist.json
"""
import argparse
import contextlib
import copy
import importlib
import json
import sys
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import eval as ev  # noqa: E402

DEFAULT_VARIANTS = "G,G_bn,ema0.999,ema0.999_warm,ema0.999_warm_bn,ema0.9999_warm_bn"


def parse_variant(name):
    """'ema0.999_warm_bn' -> (0.999, warm=True, bn=True); 'G' -> (None, False, False); 'G_bn' -> (None, False, True)."""
    head, *flags = name.split("_")
    if head == "G" and set(flags) <= {"bn"}:
        return None, False, "bn" in flags
    try:
        decay = float(head.removeprefix("ema")) if head.startswith("ema") else None
    except ValueError:
        decay = None
    if decay is None or not 0 < decay < 1 or not set(flags) <= {"warm", "bn"} or len(set(flags)) != len(flags):
        raise common.UserError(f"--variants: {name!r} is not G, G_bn or ema<decay>[_warm][_bn] (e.g. ema0.999_warm)",
                               2)
    return decay, "warm" in flags, "bn" in flags


def recompute_bn(G, latent_dim, device, batches, batch_size=250, seed=0):
    """G's BatchNorm running statistics set to their mean over `batches` batches of fresh z (update_bn), drawn from
    their own generator: the training run's random state is left alone."""
    g = torch.Generator().manual_seed(seed)
    update_bn([torch.randn(batch_size, latent_dim, generator=g).to(device) for _ in range(batches)], G)
    return G


def averaging_run(variants, at, bn_batches):
    """common.Run that also keeps the EMAs the variants name, and writes each variant at the epochs in `at`."""
    parsed = {v: parse_variant(v) for v in variants}
    kinds = sorted({(d, warm) for d, warm, _ in parsed.values() if d is not None})

    class AveragingRun(common.Run):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.averages = {(d, warm): AveragedModel(self.nets["G"], multi_avg_fn=common.ema(d) if warm else
                                                      get_ema_multi_avg_fn(d), use_buffers=True) for d, warm in kinds}

        def log(self, stats):
            super().log(stats)
            if self.step % self.args.d_steps == 0:  # G was updated at this step (the scripts' update_G)
                for avg in self.averages.values():
                    avg.update_parameters(self.nets["G"])

        def checkpoint(self, path):
            super().checkpoint(path)
            epoch = self.step // self.per
            if Path(path).name != f"epoch_{epoch:03d}.pt" or epoch not in at:
                return
            ck = torch.load(path, map_location="cpu", weights_only=True)
            for v, (d, warm, bn) in parsed.items():
                if v == "G":
                    continue
                net = copy.deepcopy(self.nets["G"] if d is None else self.averages[d, warm].module)
                if bn:
                    recompute_bn(net, self.args.latent_dim, self.device, bn_batches)
                ck["G"] = {k: t.cpu() for k, t in net.state_dict().items()}
                common.save_checkpoint(ck, self.models / v / Path(path).name)

    return AveragingRun


@contextlib.contextmanager
def run_class(cls):
    old, common.Run = common.Run, cls
    try:
        yield
    finally:
        common.Run = old


def table(rows, variants, at):
    """FID by variant (rows) and epoch (columns), as Markdown."""
    fid = {(r["variant"], r["epoch"]): r["fid"] for r in rows}
    lines = ["| variant | " + " | ".join(f"epoch {e}" for e in at) + " |", "|---|" + "---|" * len(at)]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(f"{fid[v, e]:.1f}" for e in at) + " |")
    return "\n".join(lines)


def main(argv=None):
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass
    p = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter,
                                epilog="Other flags go to the script (e.g. --dataset cifar10 --epochs 25 --seed 1).")
    p.add_argument("--script", choices=ev.ARCHS, default="dcgan", help="the training script")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated, as above")
    p.add_argument("--at", default="5,10,15,20,25", help="epochs whose variants are written and measured")
    p.add_argument("--n", type=common.positive_int, default=2000, help="samples per FID")
    p.add_argument("--bn-batches", type=common.positive_int, default=40, help="batches of 250 z for a _bn variant")
    p.add_argument("--ref", default=None, help="eval.py's --ref (e.g. a pytorch-fid .npz); None: the test split")
    p.add_argument("--json", default=None, help="also write eval.py's rows to this file")
    a, script_argv = p.parse_known_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        parse_variant(v)
    if "G" not in variants:
        variants.insert(0, "G")
    script = importlib.import_module(a.script)
    if "--out" not in script_argv:
        script_argv += ["--out", "ema_study"]
    args = script.parse_args(script_argv)
    try:
        at = sorted({int(e) for e in a.at.split(",")})
    except ValueError:
        p.error(f"--at {a.at!r}: comma-separated epochs")
    if args.conditional or args.resume or args.max_steps or not 0 < at[0] <= at[-1] <= args.epochs:
        p.error(f"--at must lie within the run's {args.epochs} epochs; --conditional, --resume and --max-steps are "
                "not measured here")
    models = Path(args.out) / "models" / args.name
    wanted = [models / ("" if v == "G" else v) / f"epoch_{e:03d}.pt" for e in at for v in variants]
    if not all(f.exists() for f in wanted):  # a run that stopped half way has no averages to go on from: again
        if models.exists():
            raise common.UserError(f"{models} holds an unfinished or other study: delete it to train it again", 2)
        with run_class(averaging_run(variants, set(at), a.bn_batches)):
            script.main(script_argv)
    device = common.get_device(args.device)
    ev_args = ev.parse_args(["--ckpt", *map(str, wanted), "--raw", "--metrics", "fid", "--n", str(a.n), "--device",
                             args.device, "--data-root", args.data_root, *(["--ref", a.ref] if a.ref else [])])
    ev_args.batch_size = ev.default_batch_size(device)
    rows = ev.measure(ev_args, device)
    for r in rows:
        r["variant"] = "G" if Path(r["checkpoint"]).parent == models else Path(r["checkpoint"]).parent.name
    print(table(rows, variants, at))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"json: {a.json}")
    return rows


if __name__ == "__main__":
    common.cli(main)
