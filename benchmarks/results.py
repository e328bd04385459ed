"""ganzoo's results: the table, FID against training minutes, the seed spread and the side-by-side figures.

Every figure comes from the scripts as they ship, at their defaults, trained here and measured with eval.py
(pytorch-fid's Inception, float32): FID and KID at N = 10000 against the test split for the table, FID at N = 2000
for the curves. Finished rows and curve points are kept in docs/results.json and never redone (unless --force),
so the work can stop anywhere and go on later; a run whose checkpoint exists is not trained again, a shorter one is
resumed (exactly). A curve whose run must be trained again from scratch is measured again whole, so that its minutes
come from one run. The README's table and docs/results.md's table of published figures, between their markers, are
rewritten from the file.

    python benchmarks/results.py table                          # every row: 6 papers x MNIST, Fashion-MNIST, CIFAR-10
    python benchmarks/results.py table --only dcgan:mnist       # one row (arch:dataset, comma-separated)
    python benchmarks/results.py seeds --only dcgan:mnist --seeds 1,2   # the same row with other seeds
    python benchmarks/results.py curves --dataset fashion-mnist # FID after epochs 1, 2, 4, ..., 20 of each paper
    python benchmarks/results.py floors                         # FID(train 10k vs test 10k) per dataset
    python benchmarks/results.py figures                        # redraw the figures and the README table only

The FID Inception weights come from torch.hub's cache ($TORCH_HOME/hub/checkpoints/).
"""
import argparse
import json
import platform
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "benchmarks"))
import common  # noqa: E402
import eval as ev  # noqa: E402

PAPERS = {"vanilla_gan": "GAN (2014)", "dcgan": "DCGAN (2015)", "wgan": "WGAN (2017)", "wgan_gp": "WGAN-GP (2017)",
          "lsgan": "LSGAN (2017)", "sngan": "SN-GAN (2018)"}
EPOCHS = {"mnist": 5, "fashion-mnist": 5, "cifar10": 25}  # the table's budget per dataset
CURVE_EPOCHS = [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
# Published FIDs to hold the rows against. Lucic et al. 2018, "Are GANs Created Equal?": the best of a large
# hyperparameter search, their own networks, 10k samples against the test set (Fashion-MNIST after 20 epochs: their
# Table 2's minimum; their non-saturating "GAN" is both vanilla_gan's and dcgan's loss, listed on CIFAR-10 against
# DCGAN, whose networks are closer to theirs). Miyato et al. 2018, Table 2: the standard CNN, spectral normalisation
# and the hinge loss, trained by the authors' code (100000 G updates).
LUCIC, MIYATO = "Lucic et al. 2018", "Miyato et al. 2018"
ANCHORS = {("fashion-mnist", "vanilla_gan"): (26.5, LUCIC), ("fashion-mnist", "wgan"): (21.5, LUCIC),
           ("fashion-mnist", "wgan_gp"): (24.5, LUCIC), ("fashion-mnist", "lsgan"): (30.7, LUCIC),
           ("cifar10", "dcgan"): (58.5, LUCIC), ("cifar10", "wgan"): (55.2, LUCIC),
           ("cifar10", "wgan_gp"): (55.8, LUCIC), ("cifar10", "lsgan"): (87.1, LUCIC),
           ("cifar10", "sngan"): (25.5, MIYATO)}
DOCS = HERE / "docs"
DB = DOCS / "results.json"


def load_db():
    db = json.loads(DB.read_text()) if DB.exists() else {}
    return {"rows": db.get("rows", []), "curves": db.get("curves", []), "floors": db.get("floors", {})}


def save_db(db):
    common.atomic_write(DB, lambda t: Path(t).write_text(json.dumps(db, indent=1) + "\n"))


def run_name(arch, dataset, seed):
    return f"{arch}_{dataset.replace('-', '_')}" + (f"_s{seed}" if seed else "")  # seed 0: the script's default


def command(arch, dataset, epochs, seed):
    return f"python {arch}.py --dataset {dataset} --epochs {epochs}" + (f" --seed {seed}" if seed else "")


def train(arch, dataset, epochs, seed, args, db):
    """models/<run>/epoch_<epochs>.pt, trained (or resumed) with the script's own command line unless it exists."""
    name = run_name(arch, dataset, seed)
    ckpt = HERE / "models" / name / f"epoch_{epochs:03d}.pt"
    if not ckpt.exists():
        check_machine(db, args)
        resume = ["--resume"] if (HERE / "models" / name / "last.pt").exists() else []
        cmd = [sys.executable, f"{arch}.py", "--dataset", dataset, "--epochs", str(epochs), "--seed", str(seed),
               "--name", name, "--data-root", args.data_root, "--device", args.device, *resume]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=HERE)
    return ckpt


def check_machine(db, args):
    """Refuse to train a result on a machine other than the one docs/results.json's come from: the papers are compared
    by their minutes and FIDs, and another CPU moves both (`dcgan.py --dataset mnist --epochs 5`, seed 0, on an AMD
    EPYC with AVX2 only: other digits for the same z, FID 24.0 against the table's 25.7, in 27 minutes against 12)."""
    here, theirs = common.device_name(common.get_device(args.device)), {r["device"] for r in db["rows"] + db["curves"]}
    if theirs and here not in theirs:
        raise common.UserError(f"docs/results.json's results come from {' and '.join(sorted(theirs))}, this is {here}: "
                               "a result trained here would not compare with them (run on that machine, or move "
                               "docs/results.json aside to start this machine's own)", 2)


def measure(ckpts, n, args, kid=True):
    """eval.py --metrics on checkpoints, in this process (the reference features are cached): -> its rows."""
    ev_args = ev.parse_args(["--ckpt", *map(str, ckpts), "--metrics", "fid,kid" if kid else "fid", "--n", str(n),
                             "--device", args.device, "--data-root", args.data_root])
    ev_args.batch_size = ev.default_batch_size(common.get_device(args.device))
    return ev.measure(ev_args, common.get_device(args.device))


def do_row(arch, dataset, seed, args, db):
    epochs = EPOCHS[dataset]
    key = (arch, dataset, epochs, seed)
    if any((r["arch"], r["dataset"], r["epochs"], r["seed"]) == key for r in db["rows"]) and not args.force:
        return
    ckpt = train(arch, dataset, epochs, seed, args, db)
    m = measure([ckpt], 10000, args)[0]
    ck = common.load_checkpoint(ckpt)
    d_steps = ck["args"].get("d_steps", 1)
    images = ck["step"] * ck["args"]["batch_size"]
    row = {"arch": arch, "dataset": dataset, "epochs": epochs, "seed": seed, "fid": m["fid"], "kid": m["kid"],
           "kid_std": m["kid_std"], "n": m["n"], "ref": m["ref"], "ref_n": m["ref_n"],
           "train_seconds": ck["train_seconds"], "img_s": images / ck["train_seconds"], "steps": ck["step"],
           "g_updates": ck["step"] // d_steps, "device": ck["device"], "torch": ck["torch_version"],
           "command": command(arch, dataset, epochs, seed), "date": str(date.today())}
    db["rows"] = [r for r in db["rows"] if (r["arch"], r["dataset"], r["epochs"], r["seed"]) != key] + [row]
    save_db(db)
    if seed == 0:  # the README's progress GIFs: this row's run, epoch by epoch
        docs_gif(run_name(arch, dataset, seed), top_half=dataset == "cifar10")
    print(f"row: {arch} {dataset} {epochs} epochs seed {seed}: FID {row['fid']:.2f}, KID {row['kid']:.4f}, "
          f"{row['train_seconds'] / 60:.1f} min", flush=True)


def docs_gif(run, frames=6, top_half=False):
    """docs/<run>_progress.gif: the run's epoch grids, at most `frames` of them (the first, every k-th, the last), so
    that a 25-epoch CIFAR-10 GIF stays small (every epoch's RGB grid made 4.3 MB). top_half: only the epoch label and
    the grid's top 4 rows of 8 (a CIFAR-10 GIF of six full grids is still 1.05 MB; this halves it)."""
    pngs = sorted((HERE / "results" / run).glob("epoch_*.png"))
    if not pngs:
        return
    k = -(-len(pngs) // (frames - 1)) if len(pngs) > frames else 1
    keep = sorted({0, *range(k - 1, len(pngs), k), len(pngs) - 1})
    grids = [Image.open(pngs[i]) for i in keep]
    if top_half:  # the grid is square under its label
        grids = [g.crop((0, 0, g.width, g.height - g.width // 2)) for g in grids]
    common.save_gif(grids, DOCS / f"{run}_progress.gif")


def do_curve(arch, dataset, args, db):
    """FID (N = 2000) after each of CURVE_EPOCHS, against the training wall time at that checkpoint. A curve's
    minutes come from one run: its points are measured again when its run is trained again from scratch (on another
    disk), since one machine's speed moves by up to 1.6x between runs while the weights do not."""
    done = {c["epoch"] for c in db["curves"] if (c["arch"], c["dataset"]) == (arch, dataset)}
    fresh = not (HERE / "models" / run_name(arch, dataset, 0) / "last.pt").exists()
    redo = args.force or (fresh and done and any(e not in done for e in CURVE_EPOCHS))
    for epoch in CURVE_EPOCHS:
        if epoch in done and not redo:
            continue
        ckpt = train(arch, dataset, epoch, 0, args, db)  # resumes the same run: epoch_005.pt is the table's row
        m = measure([ckpt], 2000, args, kid=False)[0]
        ck = common.load_checkpoint(ckpt)
        db["curves"] = [c for c in db["curves"] if (c["arch"], c["dataset"], c["epoch"]) != (arch, dataset, epoch)]
        db["curves"].append({"arch": arch, "dataset": dataset, "epoch": epoch, "n": 2000, "fid": m["fid"],
                             "train_seconds": ck["train_seconds"], "g_updates": ck["step"] // ck["args"].get(
                                 "d_steps", 1), "device": ck["device"]})
        save_db(db)
        print(f"curve: {arch} {dataset} epoch {epoch}: FID {m['fid']:.1f} (N = 2000) at "
              f"{ck['train_seconds'] / 60:.1f} min", flush=True)


def do_floor(dataset, args, db):
    from fid_crosscheck import floor
    device = common.get_device(args.device)
    extract, name = ev.feature_extractor(device)
    ns = SimpleNamespace(data_root=args.data_root, batch_size=ev.default_batch_size(device))
    fid, n_train, n_test = floor(dataset, 10000, ns, extract, name)
    db["floors"][dataset] = {"fid": fid, "n_train": n_train, "n_test": n_test}
    save_db(db)
    print(f"floor: {dataset}: FID(train {n_train} vs test {n_test}) = {fid:.2f}", flush=True)


# ------------------------------------------------------------------------------------------------------ figures
def table_order(arch, dataset):
    """The README's order: one block per dataset, the papers in the order they came out."""
    return list(EPOCHS).index(dataset), list(PAPERS).index(arch)


def table_md(db, link="docs/"):
    """The README's table, in table_order; seeds other than 0 are summarised below it (their spread), not listed."""
    rows = [r for r in db["rows"] if r["seed"] == 0]
    if not rows:
        return "(no results yet: `python benchmarks/results.py table`)\n"
    lines = ["| dataset | paper | epochs | G updates | FID | KID x 10^3 | train time | img/s | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: table_order(r["arch"], r["dataset"])):
        lines.append(f"| {r['dataset']} | [{PAPERS[r['arch']]}]({link}papers_{r['dataset'].replace('-', '_')}.png) "
                     f"| {r['epochs']} | {r['g_updates']} | {r['fid']:.1f} | {1000 * r['kid']:.1f} +- "
                     f"{1000 * r['kid_std']:.1f} | {r['train_seconds'] / 60:.0f} min | {r['img_s']:.0f} | "
                     f"`{r['command']}` |")
    machines = sorted({(r["device"], r["torch"]) for r in rows})
    out = "\n".join(lines) + "\n\n" + "Trained and measured on " + "; ".join(f"{d}, torch {t}" for d, t in machines)
    out += (". FID and KID at N = 10000 against the test split (10k images; pytorch-fid's Inception, float32). "
            "Real-vs-real floor, FID(train 10k vs test 10k): " + ", ".join(
                f"{d} {f['fid']:.2f}" for d, f in db["floors"].items()) + ".\n")
    spread = seed_spread(db)
    if spread:
        out += "\nHow much one run moves (the same command with other seeds): " + "; ".join(spread) + ".\n"
    return out


def seed_spread(db):
    groups = {}
    for r in db["rows"]:
        groups.setdefault((r["arch"], r["dataset"], r["epochs"]), []).append(r)
    out = []
    for (arch, dataset, epochs), rs in sorted(groups.items(), key=lambda g: table_order(*g[0][:2])):
        if len(rs) > 1:
            rs = sorted(rs, key=lambda r: r["seed"])
            fids = [r["fid"] for r in rs]
            seeds, values = ", ".join(str(r["seed"]) for r in rs), ", ".join(f"{f:.1f}" for f in fids)
            out.append(f"{PAPERS[arch]} on {dataset}, seeds {seeds}: FID {values} (mean {np.mean(fids):.1f}, "
                       f"range {max(fids) - min(fids):.1f})")
    return out


def anchors_md(db):
    """docs/results.md's table: each published FID beside this table's row (and its curve's epoch-20 point)."""
    lines = ["| dataset | paper | published | by | here (table; curve at epoch 20) |", "|---|---|---|---|---|"]
    for (dataset, arch), (fid, by) in sorted(ANCHORS.items(), key=lambda a: table_order(a[0][1], a[0][0])):
        here = [f"{r['fid']:.1f}" for r in db["rows"] if (r["arch"], r["dataset"], r["seed"]) == (arch, dataset, 0)]
        here += [f"{c['fid']:.1f}" for c in db["curves"] if (c["arch"], c["dataset"], c["epoch"]) == (
            arch, dataset, CURVE_EPOCHS[-1])]
        lines.append(f"| {dataset} | {PAPERS[arch]} | {fid} | {by} | {'; '.join(here) or '-'} |")
    return "\n".join(lines) + "\n"


def write_between(path, marker, text):
    """Replace what lies between <!-- marker:start --> and <!-- marker:end --> in path with text."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        new = old[:old.index(start) + len(start)] + "\n" + text + old[old.index(end):]
        common.atomic_write(path, lambda t: Path(t).write_text(new))


def write_readme(db):
    write_between(HERE / "README.md", "results", table_md(db))
    write_between(DOCS / "results.md", "anchors", anchors_md(db))


def side_by_side(dataset, db, args):
    """docs/papers_<dataset>.png: one row per paper at the table's epochs, the same z, titled with the paper's name,
    epoch and FID."""
    rows = {r["arch"]: r for r in db["rows"] if r["dataset"] == dataset and r["seed"] == 0}
    archs = [a for a in PAPERS if a in rows]
    if not archs:
        return
    ckpts = [HERE / "models" / run_name(a, dataset, 0) / f"epoch_{EPOCHS[dataset]:03d}.pt" for a in archs]
    if not all(c.exists() for c in ckpts):
        print(f"figures: {dataset}: not every checkpoint is on this machine; its figure is left as it is")
        return
    titles = [f"{PAPERS[a]}\nepoch {rows[a]['epochs']}, FID {rows[a]['fid']:.1f}" for a in archs]
    ns = SimpleNamespace(ckpt=ckpts, label=None, nrow=10, seed=0, batch_size=250,
                         out=DOCS / f"papers_{dataset.replace('-', '_')}.png")
    ev.compare_figure(ns, torch.device("cpu"), titles)


def curves_figure(dataset, db):
    """docs/fid_minutes_<dataset>.png from the curve points in docs/results.json (no training needed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter
    pts = [c for c in db["curves"] if c["dataset"] == dataset]
    if not pts:
        return
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for arch, name in PAPERS.items():
        mine = sorted((c["train_seconds"] / 60, c["fid"]) for c in pts if c["arch"] == arch)
        if mine:
            line, = ax.plot(*zip(*mine), marker="o", ms=3, label=name)
            # their 20-epoch best, drawn once this curve has reached epoch 20
            if (dataset, arch) in ANCHORS and len(mine) == len(CURVE_EPOCHS):
                star = ANCHORS[dataset, arch][0]
                ax.plot([mine[-1][0]], [star], marker="*", ms=12, color=line.get_color(), ls="none")
    ax.plot([], [], marker="*", ms=12, color="grey", ls="none", label="Lucic et al. 2018, best of a search (20 epochs)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=min(c["fid"] for c in pts) // 10 * 10 or None)  # a labelled tick below the lowest point
    ax.yaxis.set_major_formatter(ScalarFormatter())  # 30, 40, 60, 100, 200 rather than 3 x 10^1 ...
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    machines = " and ".join(sorted({c["device"] for c in pts}))
    ax.set(xlabel=f"training wall time (minutes on {machines})", ylabel="FID (N = 2000, against the test split)",
           title=f"{dataset}: FID after epochs {CURVE_EPOCHS[0]}-{CURVE_EPOCHS[-1]}, each paper at its defaults")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    common.atomic_write(DOCS / f"fid_minutes_{dataset.replace('-', '_')}.png",
                        lambda t: fig.savefig(t, dpi=100, format="png"))


def figures(db, args):
    for dataset in EPOCHS:
        side_by_side(dataset, db, args)
        curves_figure(dataset, db)
    write_readme(db)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=("table", "seeds", "curves", "floors", "figures"))
    p.add_argument("--only", default=None, help="comma-separated arch:dataset rows (table, seeds)")
    p.add_argument("--seeds", default="1,2", help="the seeds `seeds` adds to seed 0")
    p.add_argument("--dataset", default="fashion-mnist", help="curves: the dataset")
    p.add_argument("--archs", default=",".join(PAPERS), help="curves: the papers")
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="measure again what docs/results.json already has "
                   "(its checkpoint is reused: delete models/<run>/ to train it again after a change to the script)")
    args = p.parse_args()
    # `kill <pid>` of this process must not leave the training run it started going on beside the next job: SIGTERM
    # becomes SystemExit, on which subprocess.run kills its child (its checkpoints are written atomically)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("results.py: terminated; finished rows are in docs/results.json"))
    db, t0 = load_db(), time.time()
    every = [(a, d) for d in EPOCHS for a in PAPERS]
    pairs = [tuple(x.split(":")) for x in args.only.split(",")] if args.only else every
    if args.what == "table":
        for arch, dataset in pairs:
            do_row(arch, dataset, 0, args, db)
    elif args.what == "seeds":
        for arch, dataset in pairs:
            for seed in map(int, args.seeds.split(",")):
                do_row(arch, dataset, seed, args, db)
    elif args.what == "curves":
        for arch in args.archs.split(","):
            do_curve(arch, args.dataset, args, db)
    elif args.what == "floors":
        for dataset in EPOCHS:
            do_floor(dataset, args, db)
    figures(db, args)
    print(f"results.py {args.what}: {time.time() - t0:.0f} s on {platform.node()}")


if __name__ == "__main__":
    common.cli(main)
