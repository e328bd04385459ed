"""ganzoo's results table: train, measure with eval.py --metrics, write docs/results.md.

Each row is (arch, dataset, epochs). A row already in docs/results.json (same arch, dataset, epochs, N) is kept,
so the table can be built in parts over several sessions or machines; a run whose checkpoint exists is not
trained again (a shorter one is resumed). Reference features are cached by eval.py, so each dataset's test
features are extracted once. The README's table (between its results markers) is rewritten from the same rows.

    python benchmarks/results.py          # the FID weights from torch.hub's cache ($TORCH_HOME/hub/checkpoints/)
    python benchmarks/results.py --only dcgan:mnist --n 10000 ...      # one row
    python benchmarks/results.py --floors-only ...                      # FID(train 10k vs test 10k) per dataset
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "benchmarks"))
import common  # noqa: E402
import eval as ev  # noqa: E402

# (arch, dataset, epochs). The four papers on MNIST and Fashion-MNIST at the same budget, 5 epochs (300k images
# seen, whatever the batch size); CIFAR-10: 50k images at about 350 img/s on the 2-core AMD EPYC measured here is
# ~2.4 minutes an epoch, so 20 epochs is what one CPU run of under an hour allows (it took 48 minutes).
PAPERS = ("vanilla_gan", "dcgan", "wgan", "wgan_gp")
ROWS = [(arch, dataset, 5) for dataset in ("mnist", "fashion-mnist") for arch in PAPERS] + [("dcgan", "cifar10", 20)]
DOCS = HERE / "docs"
ANCHORS = """Published anchors, quoted as such (same metric, other training budgets, other FID code and reference
sets, so not directly comparable): CIFAR-10 DCGAN, FID 25-43 (the range of published figures); Fashion-MNIST GAN
after 20 epochs, FID 26.5 (Lucic et al. 2018, "Are GANs Created Equal?"). ganzoo's CIFAR-10 is the JPEG copy in
../shared/data (quality about 75), trained on and measured against its own test split, so its figures compare with
each other, not with figures against the original CIFAR-10's statistics. The rows here are short CPU budgets
(CIFAR-10: 7800 steps of 128, and FID still falling), far less training than the published figures had."""


def load_db():
    path = DOCS / "results.json"
    return json.loads(path.read_text()) if path.exists() else {"rows": [], "floors": {}}


def save_db(db):
    common.atomic_write(DOCS / "results.json", lambda t: Path(t).write_text(json.dumps(db, indent=2) + "\n"))
    common.atomic_write(DOCS / "results.md", lambda t: Path(t).write_text(table(db, grids="")))
    md = table(db, grids="docs/")
    readme = HERE / "README.md"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = readme.read_text() if readme.exists() else ""
    if start in text and end in text:
        new = text[:text.index(start) + len(start)] + "\n" + md + text[text.index(end):]
        common.atomic_write(readme, lambda t: Path(t).write_text(new))


def table(db, grids):
    """The markdown table; `grids` is the path from the page to docs/ (the final grids are linked)."""
    lines = ["| arch | dataset | epochs | train wall time | trained on | FID | KID (x 10^3) | N | real-vs-real floor "
             "| final grid |", "|---|---|---|---|---|---|---|---|---|---|"]
    order = {a: i for i, a in enumerate(PAPERS)}  # the papers in the order they came out
    for r in sorted(db["rows"], key=lambda r: (r["dataset"], order.get(r["arch"], 9))):
        fl = db["floors"].get(r["dataset"])
        floor_s = f"{fl['fid']:.2f} ({fl['n_train'] // 1000}k vs {fl['n_test'] // 1000}k)" if fl else "not yet measured"
        wall = f"{r['train_seconds'] / 60:.0f} min" if r.get("train_seconds") else "not recorded"
        lines.append(f"| {r['arch']} | {r['dataset']} | {r['epochs']} | {wall} | {r['device']} | {r['fid']:.2f} | "
                     f"{1000 * r['kid']:.2f} +- {1000 * r['kid_std']:.2f} | {r['n']} | {floor_s} | "
                     f"[epoch {r['epochs']}]({grids}{run_name(r['arch'], r['dataset'])}.png) |")
    return ("\n".join(lines) + "\n\nFID and KID against the test split (10k images), pytorch-fid's Inception and "
            "preprocessing, samples mapped back to the dataset's native size; made by `python benchmarks/results.py`. "
            "The floor is FID(train vs test) of real images: the best any generator can score.\n\n" + ANCHORS + "\n")


def run(cmd):
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, cwd=HERE)


def run_name(arch, dataset):
    return f"{arch}_{dataset.replace('-', '_')}"  # the training scripts' default --name


def do_row(arch, dataset, epochs, args, db):
    name = run_name(arch, dataset)
    ckpt = HERE / "models" / name / f"epoch_{epochs:03d}.pt"
    if not ckpt.exists():
        resume = ["--resume"] if (HERE / "models" / name / "last.pt").exists() else []
        run([sys.executable, f"{arch}.py", "--dataset", dataset, "--epochs", str(epochs), "--data-root",
             args.data_root, "--device", args.device, *resume])
    out = HERE / "results" / name / "metrics.json"
    run([sys.executable, "eval.py", "--ckpt", ckpt, "--metrics", "fid,kid", "--n", str(args.n), "--json", out,
         "--device", args.device, "--data-root", args.data_root,
         "--batch-size", str(args.batch_size)])
    m = json.loads(out.read_text())[0]
    ck = common.load_checkpoint(ckpt)
    row = {"arch": arch, "dataset": dataset, "epochs": epochs, "train_seconds": ck.get("train_seconds"),
           "device": ck.get("device", "not recorded").split(" (")[0].replace("(R)", "").replace("(TM)", ""),
           "fid": m["fid"], "kid": m["kid"],
           "kid_std": m["kid_std"], "n": m["n"], "ref": m["ref"], "ref_n": m["ref_n"], "seed": m["seed"],
           "eval_seconds": m["seconds"], "date": str(date.today()), "command": f"python {arch}.py --dataset "
           f"{dataset} --epochs {epochs}"}
    db["rows"] = [r for r in db["rows"] if (r["arch"], r["dataset"], r["epochs"]) != (arch, dataset, epochs)] + [row]
    shutil.copy(HERE / "results" / name / f"epoch_{epochs:03d}.png", DOCS / f"{name}.png")
    save_db(db)
    print(f"row: {arch} {dataset} {epochs} epochs: FID {row['fid']:.2f}, KID {row['kid']:.4f} (N = {row['n']})")


def do_floor(dataset, args, db):
    from fid_crosscheck import floor
    extract, name, _ = ev.feature_extractor(common.get_device(args.device))
    fid, n_train, n_test = floor(dataset, args.floor_n, args, extract, name)
    db["floors"][dataset] = {"fid": fid, "n_train": n_train, "n_test": n_test}
    save_db(db)
    print(f"floor: {dataset}: FID(train {n_train} vs test {n_test}) = {fid:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help="comma-separated arch:dataset rows to (re)do")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--floor-n", type=int, default=10000)
    p.add_argument("--data-root", default="data")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="default: eval.py's (10 on CPU, 200 on a GPU)")
    p.add_argument("--force", action="store_true", help="measure rows again even when docs/results.json has them")
    p.add_argument("--floors-only", action="store_true")
    p.add_argument("--no-floors", action="store_true")
    args = p.parse_args()
    args.batch_size = args.batch_size or ev.default_batch_size(common.get_device(args.device))
    DOCS.mkdir(exist_ok=True)
    db = load_db()
    t0 = time.time()
    rows = [r for r in ROWS if args.only is None or f"{r[0]}:{r[1]}" in args.only.split(",")]
    for arch, dataset, epochs in rows:
        done = any((r["arch"], r["dataset"], r["epochs"], r["n"]) == (arch, dataset, epochs, args.n) for r in db["rows"])
        if not args.floors_only and (args.force or not done):
            do_row(arch, dataset, epochs, args, db)
        if not args.no_floors and dataset not in db["floors"]:
            do_floor(dataset, args, db)
    save_db(db)
    print(table(db, grids="docs/"))
    print(f"results.py: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    common.cli(main)
