"""How fast the training scripts and eval.py run on this machine, and how close they come to its limit.

Training, for each script at its paper's defaults (MNIST's 1x32x32 and the paper's batch; DCGAN also at 3x64x64):
  - bare loop: the script's own main() with a stand-in for common.Run that feeds one preloaded batch and does
    nothing else (no data, logging, grids or checkpoints): img/s after warm-up, sustained over --seconds (this
    shared CPU runs a few steps faster than it keeps up). This is the ceiling.
  - FLOP per image, counted by torch.utils.flop_counter over one d_steps cycle (one step for the GANs), so the
    achieved GFLOP/s and its share of this machine's peak, measured in the same run by a 4096x4096 matmul
    (float32 and bfloat16; no bfloat16 peak, so no share for --amp rows, on a CPU that emulates it). Machines
    differ: nothing here is hard-coded.
  - the real script on real data (common.Run: batching, logging, progress bar, grids, checkpoints, GIF, plots):
    img/s over --script-epochs whole epochs, the share of its wall time spent outside train_step, that share in
    the last epoch alone, and the run's start-up.
  Each for the variants asked for: contiguous or channels_last, float32 or --amp (bfloat16), eager or
  torch.compile. With --sweep: the default at each thread count and at half and twice the paper's batch. With
  --breakdown (CPU): where each bare loop's time goes, by kind of op (torch.profiler), and the GFLOP/s of its
  convolutions and matrix multiplies alone, which bounds the share of the peak a whole step can reach.
  --device cuda (or mps) measures a GPU the same way (the host waits for the device only every 10 steps).
eval.py: images/s of the generator and of the FID Inception network in float32 and with --bf16, and so the wall
time of one 10k-sample FID.

    python benchmarks/speed.py                                   # the default variants (about 25 min on 2 CPU cores)
    python benchmarks/speed.py --only dcgan --no-script --json speed.json
    python benchmarks/speed.py --only vanilla_gan,dcgan --variants fp32-cl,compile,amp-cl,amp-compile --no-script
    python benchmarks/speed.py --only vanilla_gan --script-epochs 2 --sweep
    python benchmarks/speed.py --variants fp32-cl,amp-cl --no-script --breakdown
    python benchmarks/speed.py --device cuda --variants fp32,fp32-cl,amp-cl,compile,amp-compile
    python benchmarks/speed.py --only none --eval           # the FID weights in $TORCH_HOME/hub/checkpoints/
    python benchmarks/speed.py --eval --json speed.json
"""
import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # eval.py's progress bars (a script's own bar still shows its epoch)
os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # and torch.profiler's (--breakdown) start/stop log lines
import torch  # noqa: E402 (after the variables: importing torch imports tqdm, which reads its own then)
HERE = Path(__file__).resolve().parent.parent
if "--tree" in sys.argv:  # measure another checkout (the code before a change) with this same benchmark
    HERE = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
sys.path.insert(0, str(HERE))
import common  # noqa: E402

SCRIPTS = ("vanilla_gan", "dcgan", "wgan", "wgan_gp", "lsgan", "sngan")
# (name, script, extra arguments, channels, image size): the defaults, and DCGAN at 64x64 RGB
CONFIGS = [(s, s, [], 1, 32) for s in SCRIPTS] + [("dcgan_64x64_rgb", "dcgan", ["--image-size", "64"], 3, 64)]
DEVICE = torch.device("cpu")  # --device
SYNC_EVERY = 10  # on a GPU, the bare loop waits for the device every 10 steps (and at the end), not every step


def sync():
    """Wait for the device's queued work (a GPU runs behind the host); nothing on the CPU."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    elif DEVICE.type == "mps":
        torch.mps.synchronize()


def peak_gflops(dtype, n=4096, seconds=3.0):
    """A large matmul's GFLOP/s: the practical peak of this machine for dtype."""
    a, b = torch.randn(n, n).to(DEVICE, dtype), torch.randn(n, n).to(DEVICE, dtype)
    a @ b  # warm-up
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


class BareRun:
    """Stands in for common.Run: one preloaded batch, `steps` times in the first epoch, and on until the steps after
    the first `warmup` have taken `seconds`; no grids, checkpoints or logs. G, D and the batch in the variant's
    memory format (the scripts' own line puts G and D in channels_last). On a GPU each step's time is only right
    where the loop waited for the device: after each warm-up step and every SYNC_EVERY steps, where a timed loop
    ends. With `profile`, the steps after the warm-up run inside record_function("train_step") (see breakdown())."""
    steps = warmup = 0
    seconds = 0.0
    times = []
    compile = False
    profile = False
    channels_last = True

    def __init__(self, args, data, G, D, opt_G, opt_D, model_args, device, G_ema, **_):
        self.args, self.step, self.start_epoch, self.device = args, 0, 1, device
        self.models = self.results = Path(".")  # nothing is written there
        layout = torch.channels_last if BareRun.channels_last else torch.contiguous_format
        G.to(memory_format=layout), D.to(memory_format=layout)  # in place: the optimizers keep their parameters
        if BareRun.compile:  # in place, so the script's optimizers keep their parameters
            G.compile()
            if args.arch != "wgan_gp":  # its penalty differentiates D's gradient: torch.compile has no double backward
                D.compile()
        self.real = common.normalize(data.images[:args.batch_size].to(device)).contiguous(memory_format=layout)
        self.labels = data.labels[:args.batch_size].to(device) if args.conditional else None

    def batches(self, epoch):
        times = BareRun.times
        while epoch == 1 and (len(times) < BareRun.steps or sum(times[BareRun.warmup:]) < BareRun.seconds
                              or BareRun.seconds and (len(times) - BareRun.warmup) % SYNC_EVERY):
            tag = BareRun.profile and len(times) >= BareRun.warmup
            t0 = time.perf_counter()
            with torch.profiler.record_function("train_step") if tag else contextlib.nullcontext():
                yield self.real, self.labels
            if len(times) < BareRun.warmup or (len(times) + 1 - BareRun.warmup) % SYNC_EVERY == 0:
                sync()
            times.append(time.perf_counter() - t0)

    def log(self, stats):
        pass

    def grid(self, path):
        pass

    def checkpoint(self, path):
        pass

    def finish(self):
        pass

    def parallel(self, G, D):
        return G, D


def fake_data(channels, size, n):
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return common.Data("fake", channels, size, size, "none", [str(i) for i in range(10)], torch.arange(n) % 10,
                       images=images)


def argv_for(extra, variant):
    return ["--device", DEVICE.type, *extra] + (["--amp"] if variant["amp"] else [])


@contextlib.contextmanager
def patched(module, **attrs):
    old = {k: getattr(module, k) for k in attrs}
    for k, v in attrs.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def run_bare(script, extra, channels, size, variant, steps, warmup=0, seconds=0.0):
    """The script's main() with BareRun for `steps` steps, and on until the steps after `warmup` took `seconds`.
    -> its parsed arguments (BareRun.times has each step's time)."""
    mod = importlib.import_module(script)
    args = mod.parse_args(argv_for(extra, variant))
    BareRun.steps, BareRun.warmup, BareRun.seconds, BareRun.times = steps, warmup, seconds, []
    BareRun.compile, BareRun.channels_last = variant.get("compile", False), variant["channels_last"]
    with patched(common, Run=BareRun, load_dataset=lambda *a, **k: fake_data(channels, size, args.batch_size)):
        mod.main(argv_for(extra, variant))
    return args


def bare_loop(script, extra, channels, size, variant, warmup, steps, seconds):
    """-> img/s of the script's main() with BareRun, after `warmup` steps, over at least `steps` steps and
    `seconds` (a sustained rate: over a few steps this shared CPU runs faster than it can keep up)."""
    args = run_bare(script, extra, channels, size, variant, warmup + steps, warmup, seconds)
    return args.batch_size * (len(BareRun.times) - warmup) / sum(BareRun.times[warmup:])


def flop_counter():
    """A dispatch mode counting the FLOP of the aten ops torch.utils.flop_counter has formulas for (matmuls,
    convolutions and their backward passes), without FlopCounterMode's module hooks, which autograd.grad (WGAN-GP's
    penalty) refuses."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Flops(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **(kwargs or {}), out_val=out)
            return out
    return Flops()


def flop_per_image(script, extra, channels, size, variant):
    """FLOP of one d_steps cycle (one step for the GANs), per real image it consumed."""
    cycle = importlib.import_module(script).parse_args(argv_for(extra, variant)).d_steps
    with flop_counter() as counter:
        args = run_bare(script, extra, channels, size, variant, cycle)
    return counter.total / (cycle * args.batch_size)


KINDS = ("conv+matmul", "norm layers", "activations", "optimizer", "other")
NORMS = ("batch_norm", "group_norm", "layer_norm", "instance_norm")  # not aten::norm (WGAN-GP's gradient norm)
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}
ACTIVATIONS = ("relu", "threshold", "clamp_min", "tanh", "sigmoid")  # ReLU(inplace) runs as clamp_min_
PROFILE_STEPS = 10  # --breakdown: the steps profiled after the warm-up


def kind(event):
    """Which part of a training step a profiled op is, or None for an op outside the timed steps."""
    names, e = [], event
    while e is not None:
        names.append(e.name)
        e = e.cpu_parent
    if "train_step" not in names:
        return None
    name = event.name
    return ("optimizer" if any(n.startswith("Optimizer.") for n in names)  # Adam's or RMSProp's step, zero_grad
            else "conv+matmul" if "convolution" in name or name in MATMULS  # the ops FLOP per image counts
            else "norm layers" if any(n in name for n in NORMS)
            else "activations" if any(a in name for a in ACTIVATIONS)
            else "other")  # losses, z, copies, autograd's and Python's own time (train_step's self time)


def breakdown(script, extra, channels, size, variant, warmup, flop, steps=PROFILE_STEPS):
    """Where a bare loop's time goes, on the CPU: torch.profiler's self time of each op in `steps` steps after
    `warmup`, summed by kind. -> ({kind: share}, GFLOP/s of the convolutions and matmuls alone, given the FLOP
    per image). The profiler slows small ops, so "other" reads a little high; the convolutions' share and speed
    are what show how close the step can come to the peak."""
    from torch.profiler import ProfilerActivity, profile
    BareRun.profile = True
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            args = run_bare(script, extra, channels, size, variant, warmup + steps, warmup)
    finally:
        BareRun.profile = False
    times = dict.fromkeys(KINDS, 0.0)
    for event in prof.events():
        k = kind(event)
        if k is not None:
            times[k] += event.self_cpu_time_total / 1e6
    total = sum(times.values())
    return {k: t / total for k, t in times.items()}, flop * args.batch_size * steps / times["conv+matmul"] / 1e9


def real_script(script, dataset, variant, data_root, out, epochs=1):
    """Whole epochs of the real script on real data: img/s, the share of wall time outside train_step, the run's
    start-up (main() up to its first step: dataset, models, imports; paid once per run), and the share outside
    train_step in the last epoch alone (with one epoch: after the start-up; with two, the steady state, once the
    first grid, checkpoint and plot have paid for their imports). On a GPU, train_step returns before the device
    has done its work, so only the img/s is measured there (the run ends by reading the weights: a wait)."""
    mod = importlib.import_module(script)
    starts, inside, real_step = [], [], mod.train_step

    def timed(*a, **k):
        t0 = time.perf_counter()
        r = real_step(*a, **k)
        starts.append(t0)
        inside.append(time.perf_counter() - t0)
        return r
    argv = argv_for(["--dataset", dataset, "--data-root", data_root, "--epochs", str(epochs), "--out", out,
                     "--name", f"speed_{script}_{int(time.time() * 1000)}"], variant)
    args = mod.parse_args(argv)
    t0 = time.perf_counter()
    with patched(mod, train_step=timed):
        mod.main(argv)
    end = time.perf_counter()
    last = len(starts) - len(starts) // epochs  # the first step of the last epoch
    row = {"script_img_s": len(starts) * args.batch_size / (end - t0), "script_wall_s": end - t0,
           "script_epochs": epochs, "startup_s": starts[0] - t0, "outside_share": None,
           "outside_share_last_epoch": None}
    if DEVICE.type == "cpu":
        row.update(outside_share=1 - sum(inside) / (end - t0),
                   outside_share_last_epoch=1 - sum(inside[last:]) / (end - starts[last]))
    return row


def sweep(report, name, script, extra, channels, size, var, args):
    """Bare-loop img/s of the default variant against torch's thread count and the batch size."""
    default_threads = torch.get_num_threads()
    batch = importlib.import_module(script).parse_args(argv_for(extra, var)).batch_size
    for threads in range(1, (os.cpu_count() or 1) + 1):
        torch.set_num_threads(threads)
        try:
            rate = bare_loop(script, extra, channels, size, var, args.warmup, args.steps, args.seconds)
        finally:
            torch.set_num_threads(default_threads)
        report["sweep"].append({"config": name, "threads": threads, "batch_size": batch, "bare_img_s": rate})
        print(f"  {name}: {threads} thread{'s' * (threads > 1)}{' (default)' * (threads == default_threads)}, "
              f"batch {batch}: {rate:.0f} img/s", flush=True)
    for b in (batch // 2, batch * 2):
        rate = bare_loop(script, extra + ["--batch-size", str(b)], channels, size, var, args.warmup, args.steps,
                         args.seconds)
        report["sweep"].append({"config": name, "threads": default_threads, "batch_size": b, "bare_img_s": rate})
        print(f"  {name}: {default_threads} threads, batch {b} (not the paper's): {rate:.0f} img/s", flush=True)


def eval_speed(modes, batch_size, images=300):
    """eval.py's generator img/s, and the FID Inception's img/s in float32 (plain) and with --bf16 on MNIST-like
    28x28 input, with bf16's error against the plain features; one 10k-sample FID against a cached reference is
    then 10000 / generator + 10000 / Inception."""
    import eval as ev
    device = DEVICE
    G = importlib.import_module("dcgan").Generator(latent_dim=100, channels=1, image_size=32).eval().to(device)
    t0 = time.perf_counter()
    ev.generate(G, ev.latents(2000, 100, 0), None, device, 250)
    out = {"generator_img_s": 2000 / (time.perf_counter() - t0), "inception_batch": batch_size, "modes": {}}
    x = torch.randint(0, 256, (images, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = None
    for mode in modes:
        extract, name = ev.feature_extractor(device, bf16=mode == "bf16")
        t0 = time.perf_counter()
        ev.features(extract, x[:batch_size], batch_size, None)  # warm-up
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        f = torch.from_numpy(ev.features(extract, x, batch_size, None))
        rate = images / (time.perf_counter() - t0)
        plain = f if mode == "plain" else plain
        err = None if plain is None else ((f - plain).abs().mean() / plain.abs().mean()).item()
        out["modes"][mode] = {"img_s": rate, "first_batch_s": first, "feature_rel_err": err,
                              "fid_10k_s": 10000 / out["generator_img_s"] + 10000 / rate + first}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(c[0] for c in CONFIGS), help="comma-separated configs, or none: "
                   + ", ".join(c[0] for c in CONFIGS))
    p.add_argument("--variants", default="fp32,fp32-cl,amp-cl", help="fp32 (contiguous), fp32-cl (channels_last), "
                   "amp, amp-cl (bfloat16 autocast), compile, amp-compile (fp32-cl or amp-cl with G and D through "
                   "torch.compile, bare loop only; WGAN-GP's D stays eager)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30, help="timed steps of each bare loop, at least")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds of each bare loop, at least")
    p.add_argument("--script-variants", default="fp32-cl,amp-cl", help="the variants also measured as the real "
                   "script over one epoch of MNIST (-cl ones only: the scripts put G and D in channels_last)")
    p.add_argument("--no-script", action="store_true", help="skip the real-script epochs")
    p.add_argument("--script-epochs", type=int, default=1, help="epochs of each real-script run (2: the last "
                   "epoch shows the steady per-epoch cost outside train_step)")
    p.add_argument("--sweep", action="store_true", help="also the default (fp32-cl) bare loop at each thread "
                   "count from 1 to this machine's, and at half and twice the paper's batch size")
    p.add_argument("--tree", default=None, help="measure the scripts of another checkout (e.g. a git worktree of "
                   "the commit before a change); one from before the speed switches runs fp32 only")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="where to measure (on a GPU "
                   "the real-script rows give img/s only; --breakdown is CPU only)")
    p.add_argument("--breakdown", action="store_true", help="also profile each bare loop (CPU): the share of its "
                   "time in convolutions and matrix multiplies and their GFLOP/s, normalisation layers, "
                   "activations, the optimizers and the rest")
    p.add_argument("--data-root", default="data")
    p.add_argument("--eval", action="store_true", help="also measure eval.py (the FID Inception weights from "
                   "torch.hub's cache: $TORCH_HOME/hub/checkpoints/)")
    p.add_argument("--eval-batch-size", type=int, default=10)
    p.add_argument("--inception", default="plain,bf16", help="eval.py's Inception in float32 (plain) and with "
                   "--bf16 (plain first: bf16's feature error is against it)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    global DEVICE
    try:
        DEVICE = common.get_device(args.device)
    except common.UserError as e:
        p.error(str(e))
    if args.breakdown and DEVICE.type != "cpu":
        p.error("--breakdown profiles CPU time: use it with --device cpu")
    torch.manual_seed(0)
    variants = {"fp32": dict(amp=False, channels_last=False), "fp32-cl": dict(amp=False, channels_last=True),
                "amp": dict(amp=True, channels_last=False), "amp-cl": dict(amp=True, channels_last=True),
                "compile": dict(amp=False, channels_last=True, compile=True),
                "amp-compile": dict(amp=True, channels_last=True, compile=True)}
    chosen = [v.strip() for v in args.variants.split(",")]
    print(f"scripts from {HERE}", flush=True)
    report = {"device": common.device_name(DEVICE), "torch": torch.__version__, "rows": [], "sweep": [],
              "bf16_native": "bf16" in (common._cpuinfo("flags") or "bf16") if DEVICE.type == "cpu" else None}
    report["peak_gflops_fp32"] = peak_gflops(torch.float32)
    # a CPU without bfloat16 instructions emulates it (an AVX2-only AMD EPYC: 0.5 GFLOP/s at 1024^2), so it has no
    # bf16 peak to hold --amp rows against: their % peak is left out there ('-')
    report["peak_gflops_bf16"] = None if report["bf16_native"] is False else peak_gflops(torch.bfloat16)
    bf16 = "none: bf16 is emulated" if report["peak_gflops_bf16"] is None else f"{report['peak_gflops_bf16']:.0f} bf16"
    print(f"{report['device']}, torch {torch.__version__}; matmul peak: {report['peak_gflops_fp32']:.0f} GFLOP/s "
          f"fp32, {bf16}", flush=True)
    print(f"{'config':<17} {'variant':<11} {'MFLOP/img':>9} {'bare img/s':>10} {'GFLOP/s':>8} {'% peak':>6} "
          f"{'script img/s':>12} {'vs bare':>7} {'outside':>7} {'last ep':>8} {'start':>6}", flush=True)
    only = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="ganzoo-speed-", ignore_cleanup_errors=True) as out:
        for name, script, extra, channels, size in CONFIGS:
            if name not in only:
                continue
            for v in chosen:
                var = variants[v]
                flop = flop_per_image(script, extra, channels, size, {**var, "compile": False})
                rate = bare_loop(script, extra, channels, size, var, args.warmup, args.steps, args.seconds)
                warm = sum(BareRun.times[:args.warmup])  # with torch.compile: the compile
                peak = report["peak_gflops_bf16" if var["amp"] else "peak_gflops_fp32"]
                row = {"config": name, "variant": v, "flop_per_image": flop, "bare_img_s": rate, "warmup_s": warm,
                       "gflop_s": flop * rate / 1e9, "share_of_peak": peak and flop * rate / 1e9 / peak}
                if not args.no_script and size == 32 and v in args.script_variants.split(",") and not var.get(
                        "compile") and var["channels_last"]:  # the real scripts run channels_last, as they say
                    row.update(real_script(script, "mnist", var, args.data_root, out, args.script_epochs))
                if args.breakdown:
                    row["breakdown"], row["conv_matmul_gflop_s"] = breakdown(script, extra, channels, size, var,
                                                                             args.warmup, flop)
                report["rows"].append(row)
                s = (f"{row['script_img_s']:>12.0f} {row['script_img_s'] / rate:>7.1%} "
                     f"{percent(row['outside_share'], 7)} {percent(row['outside_share_last_epoch'], 8)} "
                     f"{row['startup_s']:>6.1f}"
                     if "script_img_s" in row else f"{'-':>12} {'-':>7} {'-':>7} {'-':>8} {'-':>6}")
                print(f"{name:<17} {v:<11} {flop / 1e6:>9.1f} {rate:>10.0f} {row['gflop_s']:>8.1f} "
                      f"{percent(row['share_of_peak'], 6)} {s}"
                      + (f"   (first {args.warmup} steps, the compile: {warm:.0f} s)" if var.get("compile") else ""),
                      flush=True)
            if args.sweep:
                sweep(report, name, script, extra, channels, size, variants["fp32-cl"], args)
    if args.breakdown:
        print(f"where the bare loops' time goes (torch.profiler, {PROFILE_STEPS} steps; the ops' self time by kind; "
              "GFLOP/s and % peak of the convolutions and matrix multiplies alone):")
        print(f"{'config':<17} {'variant':<11} " + " ".join(f"{k:>11}" for k in KINDS)
              + f" {'GFLOP/s':>8} {'% peak':>6}")
        for row in (r for r in report["rows"] if "breakdown" in r):
            peak = report["peak_gflops_bf16" if variants[row["variant"]]["amp"] else "peak_gflops_fp32"]
            print(f"{row['config']:<17} {row['variant']:<11} "
                  + " ".join(f"{row['breakdown'][k]:>11.1%}" for k in KINDS)
                  + f" {row['conv_matmul_gflop_s']:>8.1f} {percent(peak and row['conv_matmul_gflop_s'] / peak, 6)}",
                  flush=True)
    if args.eval:
        report["eval"] = e = eval_speed(args.inception.split(","), args.eval_batch_size)
        print(f"eval.py: generator {e['generator_img_s']:.0f} img/s; FID Inception, batch {e['inception_batch']}:")
        for mode, m in e["modes"].items():
            err = "" if m["feature_rel_err"] is None else f", features {m['feature_rel_err']:.1e} off plain"
            print(f"  {mode:<9} {m['img_s']:6.1f} img/s (first batch {m['first_batch_s']:.0f} s{err}); "
                  f"one 10k FID against a cached reference: {m['fid_10k_s']:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"json: {args.json}")


def percent(x, width):
    """x as a right-aligned percentage, or '-' where it was not measured (None)."""
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.1%}"


if __name__ == "__main__":
    main()
