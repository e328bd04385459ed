"""Cross-check eval.py's FID with the pytorch-fid command line, and print real-vs-real floors.

1. `eval.py --save-dir` writes N samples of a checkpoint as PNG files (native size, uint8);
2. `eval.py --metrics fid` measures the same N samples (same --seed) against a reference .npz;
3. `python -m pytorch_fid` measures the saved files against the same .npz, independently of ganzoo's code path
   (its own file loader, batching and statistics);
4. both figures are printed with their relative difference. ganzoo uses pytorch-fid's network and preprocessing,
   so they should agree to float rounding: the check is that ganzoo's samples reach the network exactly as files do;
5. the reference side likewise: eval.py's statistics of the test split (read through ganzoo's data layer) against
   the .npz, which pytorch-fid made from the same files.

Then, for each dataset in --ref-checks, step 5 alone; for each dataset in --floors, FID(train N vs test N): the
best any generator can score at that N.

    python benchmarks/fid_crosscheck.py --ckpt models/dcgan_mnist/epoch_005.pt --ref stats/mnist-test-10k.npz

Both tools take the FID Inception weights from torch.hub's cache ($TORCH_HOME/hub/checkpoints/).
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import eval as ev  # noqa: E402


def run(cmd):
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"failed ({out.returncode}): {' '.join(map(str, cmd))}\n{out.stderr[-2000:]}")
    return out.stdout, time.time() - t0


def real_stats(dataset, split, n, args, extract, name):
    """eval.py's statistics of n real images of a dataset split (features cached by eval.reference)."""
    ck = {"data": {"dataset": dataset, "native_size": 32 if dataset == "cifar10" else 28, "source": ""},
          "args": {"data_root": args.data_root}}
    ns = argparse.Namespace(data_root=args.data_root, ref_n=n, batch_size=args.batch_size)
    return ev.reference(f"{dataset}:{split}", ck, ns, extract, name)


def floor(dataset, n, args, extract, name):
    """FID between n train and n test images of a dataset."""
    a, b = (real_stats(dataset, split, n, args, extract, name) for split in ("train", "test"))
    return ev.fid_from_stats(a["mu"], a["sigma"], b["mu"], b["sigma"]), a["n"], b["n"]


def ref_check(dataset, npz, args, extract, name):
    """eval.py's test-split statistics (its data layer) against a pytorch-fid .npz made from the same files:
    ~0 when real images reach the network the same way through both."""
    t0 = time.time()
    ours = real_stats(dataset, "test", 10000, args, extract, name)
    with np.load(npz) as z:
        fid = ev.fid_from_stats(ours["mu"], ours["sigma"], z["mu"], z["sigma"])
        mu_diff = float(abs(ours["mu"] - z["mu"]).max())
    print(f"reference    FID(eval.py's {dataset}:test statistics, {Path(npz).name}) = {fid:.1e}, "
          f"max |mu difference| {mu_diff:.2e}   ({time.time() - t0:.0f} s)")
    return {"fid": fid, "max_mu_diff": mu_diff}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", help="checkpoint to cross-check (omit to print floors only)")
    p.add_argument("--n", type=int, default=10000, help="samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref", help="pytorch-fid .npz; None: <stats>/<dataset>-test-10k.npz")
    p.add_argument("--stats", default="../shared/fid", help="a folder of pytorch-fid .npz statistics, "
                   "<dataset>-test-10k.npz")
    p.add_argument("--ref-checks", default="", help="comma-separated datasets: eval.py's test statistics against "
                   "<stats>/<dataset>-test-10k.npz (cheap once eval.py has cached the test features)")
    p.add_argument("--floors", default="", help="comma-separated datasets for FID(train N vs test N)")
    p.add_argument("--floor-n", type=int, default=10000)
    p.add_argument("--data-root", default="data")
    p.add_argument("--batch-size", type=int, default=None, help="default: eval.py's (10 on CPU, 200 on a GPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    args.batch_size = args.batch_size or ev.default_batch_size(common.get_device(args.device))
    result = {"n": args.n, "seed": args.seed}

    if args.ckpt:
        ck = common.load_checkpoint(args.ckpt)
        ref = args.ref or str(Path(args.stats) / f"{ck['data']['dataset']}-test-10k.npz")
        with tempfile.TemporaryDirectory(prefix="ganzoo-crosscheck-") as tmp:  # 10k PNGs: removed afterwards
            work = Path(tmp)
            common_args = ["--ckpt", args.ckpt, "--n", str(args.n), "--seed", str(args.seed), "--device", args.device,
                           "--batch-size", str(args.batch_size)]
            _, t_save = run([sys.executable, HERE / "eval.py", *common_args, "--save-dir", work / "samples"])
            _, t_ours = run([sys.executable, HERE / "eval.py", *common_args, "--metrics", "fid", "--ref", ref,
                             "--json", work / "ganzoo.json"])
            ours = json.loads((work / "ganzoo.json").read_text())[0]["fid"]
            out, t_theirs = run([sys.executable, "-m", "pytorch_fid", work / "samples", ref, "--device", args.device,
                                 "--batch-size", str(args.batch_size)])
            theirs = float(re.search(r"FID:\s*([0-9.eE+-]+)", out).group(1))
        diff = abs(ours - theirs) / theirs
        print(f"checkpoint   {args.ckpt} (epoch {ck['epoch']}), N = {args.n}, seed {args.seed}, reference {ref}")
        print(f"eval.py      FID {ours:.4f}   ({t_ours:.0f} s; eval.py --save-dir took {t_save:.0f} s)")
        print(f"pytorch-fid  FID {theirs:.4f}   ({t_theirs:.0f} s, `python -m pytorch_fid` on the saved PNGs)")
        print(f"difference   {100 * diff:.4f} % (target: within 1 %)")
        result.update(checkpoint=args.ckpt, epoch=ck["epoch"], ref=ref, ganzoo=ours, pytorch_fid=theirs,
                      rel_diff=diff)

    if args.ckpt or args.floors or args.ref_checks:
        extract, name = ev.feature_extractor(common.get_device(args.device))
    if args.ckpt and ck["data"]["dataset"] != "folder":
        result["ref_check"] = ref_check(ck["data"]["dataset"], ref, args, extract, name)
    for d in filter(None, args.ref_checks.split(",")):
        result.setdefault("ref_checks", {})[d] = ref_check(d, Path(args.stats) / f"{d}-test-10k.npz", args, extract,
                                                           name)
    if args.floors:
        result["floors"] = {}
        for d in args.floors.split(","):
            t0 = time.time()
            fid, n_train, n_test = floor(d, args.floor_n, args, extract, name)
            print(f"floor        {d}: FID(train {n_train} vs test {n_test}) = {fid:.2f}   ({time.time() - t0:.0f} s)")
            result["floors"][d] = {"fid": fid, "n_train": n_train, "n_test": n_test}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    common.cli(main)
