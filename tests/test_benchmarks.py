"""The benchmarks run (speed.py, results.py), and their figures hang together. Not a timed test: no figure is held
to a target, only to the other figures of the same run."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import common
from conftest import train

ROOT = Path(__file__).resolve().parent.parent
SPEED = ROOT / "benchmarks" / "speed.py"
RESULTS = ROOT / "benchmarks" / "results.py"


def load_speed(monkeypatch):
    """benchmarks/speed.py as a module; the environment variables it sets are put back after the test."""
    for name in ("TQDM_DISABLE", "KINETO_LOG_LEVEL"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("speed", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(name, parent=None):
    return SimpleNamespace(name=name, cpu_parent=parent)


def test_breakdown_sorts_profiled_ops_by_kind(monkeypatch):
    speed = load_speed(monkeypatch)
    step = event("train_step")
    adam = event("Optimizer.step#Adam.step", step)
    assert speed.kind(event("aten::convolution_backward", step)) == "conv+matmul"
    assert speed.kind(event("aten::addmm", event("aten::linear", step))) == "conv+matmul"
    assert speed.kind(event("aten::native_batch_norm_backward", step)) == "norm layers"
    assert speed.kind(event("aten::native_group_norm", step)) == "norm layers"  # WGAN-GP's critic
    assert speed.kind(event("aten::linalg_vector_norm", step)) == "other"  # its penalty's gradient norm
    assert speed.kind(event("aten::clamp_min_", event("aten::relu_", step))) == "activations"  # ReLU(inplace)
    assert speed.kind(event("aten::leaky_relu_backward", step)) == "activations"
    assert speed.kind(event("aten::_fused_adam_", adam)) == "optimizer"
    assert speed.kind(event("aten::mul_", adam)) == "optimizer"  # an unfused optimizer's element-wise ops
    assert speed.kind(event("aten::binary_cross_entropy_with_logits", step)) == "other"
    assert speed.kind(step) == "other"  # train_step's self time: Python's and autograd's own
    assert speed.kind(event("aten::normal_", event("DCGAN init"))) is None  # outside the timed steps


def run_speed(monkeypatch, capsys, *argv):
    """benchmarks/speed.py's main() in this process, its matmul peak and profile small and short -> (report,
    stdout)."""
    import functools
    speed = load_speed(monkeypatch)
    monkeypatch.setattr(speed, "peak_gflops", functools.partial(speed.peak_gflops, n=256, seconds=0.05))
    monkeypatch.setattr(speed, "breakdown", functools.partial(speed.breakdown, steps=2))
    monkeypatch.setattr(sys, "argv", ["speed.py", *argv, "--json", "speed.json"])
    speed.main()
    return json.loads(Path("speed.json").read_text()), capsys.readouterr().out


def test_speed_benchmark_runs_and_its_breakdown_adds_up(monkeypatch, capsys):
    report, stdout = run_speed(monkeypatch, capsys, "--only", "dcgan", "--variants", "fp32-cl", "--no-script",
                               "--warmup", "1", "--steps", "2", "--seconds", "0", "--breakdown")
    (row,) = report["rows"]
    assert row["config"] == "dcgan" and row["variant"] == "fp32-cl"
    assert row["bare_img_s"] > 0 and row["flop_per_image"] > 1e8  # DCGAN at 32x32: hundreds of MFLOP per image
    assert abs(row["gflop_s"] - row["flop_per_image"] * row["bare_img_s"] / 1e9) < 1e-6 * row["gflop_s"]
    shares = row["breakdown"]
    assert set(shares) == {"conv+matmul", "norm layers", "activations", "optimizer", "other"}
    assert abs(sum(shares.values()) - 1) < 1e-9 and all(v > 0 for v in shares.values())
    assert max(shares, key=shares.get) == "conv+matmul"  # a DCGAN step is mostly its convolutions
    assert row["conv_matmul_gflop_s"] > 0
    assert "where the bare loops' time goes" in stdout


def test_speed_benchmark_holds_amp_against_a_bf16_peak_only_where_the_cpu_has_bf16(monkeypatch, capsys):
    """A CPU without bfloat16 instructions emulates it, many times slower than float32: a 'peak' measured there is
    no peak, so --amp rows get no share of it; float32 rows always do."""
    report, stdout = run_speed(monkeypatch, capsys, "--only", "vanilla_gan", "--variants", "fp32-cl,amp-cl",
                               "--no-script", "--warmup", "1", "--steps", "2", "--seconds", "0")
    fp32, amp = report["rows"]
    assert fp32["share_of_peak"] > 0 and report["peak_gflops_fp32"] > 0
    if report["bf16_native"] is False:
        assert report["peak_gflops_bf16"] is None and amp["share_of_peak"] is None
        assert "bf16 is emulated" in stdout
    else:
        assert report["peak_gflops_bf16"] > 0 and amp["share_of_peak"] > 0


def test_speed_benchmark_refuses_what_it_cannot_measure(monkeypatch, capsys):
    """One line and exit 2: no CUDA here (or, on a GPU machine, --breakdown is CPU only)."""
    speed = load_speed(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["speed.py", "--device", "cuda", "--breakdown"])
    with pytest.raises(SystemExit) as stop:
        speed.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "error: --device cuda: no CUDA GPU" in err or "error: --breakdown profiles CPU time" in err


def load_results(monkeypatch, tmp_path):
    """benchmarks/results.py as a module, its docs/ (results.json, figures, README) redirected to tmp_path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("results", RESULTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)
    monkeypatch.setattr(module, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(module, "DB", tmp_path / "docs" / "results.json")
    (tmp_path / "docs").mkdir()
    return module


def row(arch, seed, fid):
    return {"arch": arch, "dataset": "mnist", "epochs": 5, "seed": seed, "fid": fid, "kid": 0.01, "kid_std": 0.001,
            "train_seconds": 600, "img_s": 500, "g_updates": 2345, "device": "cpu: Test CPU (2 threads)",
            "torch": "2.x", "command": f"python {arch}.py --dataset mnist --epochs 5"}


def test_results_skip_finished_rows_and_write_the_readme_table_from_the_file(monkeypatch, tmp_path):
    """A row already in results.json is neither trained nor measured again, and the README's table (between its
    markers) is what the file holds: seed 0 in the table, the other seeds as the spread below it."""
    results = load_results(monkeypatch, tmp_path)
    db = {"rows": [row("dcgan", 0, 20.0), row("dcgan", 1, 26.0), row("dcgan", 2, 23.0), row("wgan", 0, 90.0)],
          "curves": [], "floors": {"mnist": {"fid": 1.5}}}
    results.save_db(db)
    monkeypatch.setattr(results, "train", lambda *a: (_ for _ in ()).throw(AssertionError("trained a done row")))
    results.do_row("dcgan", "mnist", 0, SimpleNamespace(force=False), results.load_db())
    (tmp_path / "README.md").write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n")
    results.write_readme(results.load_db())
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("intro\n<!-- results:start -->\n| dataset |")
    assert text.endswith("<!-- results:end -->\nafter\n")
    assert "| mnist | [DCGAN (2015)]" in text and "| 20.0 | 10.0 +- 1.0 | 10 min | 500 |" in text
    assert "| mnist | [WGAN (2017)]" in text and "old" not in text and "26.0 |" not in text
    assert "DCGAN (2015) on mnist, seeds 0, 1, 2: FID 20.0, 26.0, 23.0 (mean 23.0, range 6.0)" in text
    assert "Test CPU" in text and "mnist 1.50" in text


def test_the_docs_quote_only_figures_that_results_json_holds():
    """Every FID and every count of training minutes in the prose of the README and docs/results.md (the tables
    between results.py's markers aside, which it writes from the file) is one of docs/results.json's, rounded as the
    table (rows: FID to 0.1, minutes to 1) or the curves (both to 0.1) round them: prose and table cannot disagree.
    Lists count ("FID 22.3 and 22.9", "after 33.5 and 32.4 minutes")."""
    db = json.loads((ROOT / "docs/results.json").read_text())
    fids = {f"{r['fid']:.1f}" for r in db["rows"] + db["curves"]}
    minutes = {f"{r['train_seconds'] / 60:.0f}" for r in db["rows"]} | {
        f"{c['train_seconds'] / 60:.1f}" for c in db["curves"]}
    number_list = r"(\d+(?:\.\d+)?(?:(?:, | and )\d+(?:\.\d+)?)*)"
    quoted = []
    for doc in ("README.md", "docs/results.md"):
        text = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", "", (ROOT / doc).read_text(), flags=re.S)
        text = " ".join(text.split())  # a figure list may wrap
        for kind, pattern, allowed in (("FID", r"FID " + number_list, fids), ("min", number_list + " minutes", minutes)):
            for found in re.findall(pattern, text):
                for value in re.split(", | and ", found):
                    quoted.append(value)
                    assert value in allowed, f"{doc}: {kind} {value} is not in docs/results.json"
    assert len(quoted) > 20  # the check saw the prose's figures


def test_the_docs_gif_keeps_at_most_six_epochs_first_and_last_among_them(monkeypatch, tmp_path):
    """A 25-epoch run's GIF in docs/ holds epochs 1, 5, 10, 15, 20 and 25 (every epoch's RGB grid made 4.3 MB);
    a 5-epoch run's holds all five."""
    from PIL import Image
    results = load_results(monkeypatch, tmp_path)
    for run, epochs in (("long", 25), ("short", 5)):
        (tmp_path / "results" / run).mkdir(parents=True)
        for e in range(1, epochs + 1):  # epoch e's grid is one grey level, 10 * e
            Image.new("L", (8, 8), 10 * e).save(tmp_path / "results" / run / f"epoch_{e:03d}.png")
        results.docs_gif(run)
    for run, expected in (("long", [1, 5, 10, 15, 20, 25]), ("short", [1, 2, 3, 4, 5])):
        gif = Image.open(tmp_path / "docs" / f"{run}_progress.gif")
        levels = []
        for i in range(gif.n_frames):
            gif.seek(i)
            levels.append(gif.convert("L").getpixel((0, 0)))
        assert levels == [10 * e for e in expected]


def test_the_cifar10_docs_gif_keeps_the_label_and_the_grids_top_half(monkeypatch, tmp_path):
    """A grid is its label band over a square grid; top_half keeps the band and the grid's top half."""
    from PIL import Image
    results = load_results(monkeypatch, tmp_path)
    (tmp_path / "results" / "rgb").mkdir(parents=True)
    grid = Image.new("RGB", (40, 50), "white")  # a 10 px label band over a 40 x 40 grid
    grid.paste((255, 0, 0), (0, 10, 40, 30))  # the top half of the grid red, the bottom half blue
    grid.paste((0, 0, 255), (0, 30, 40, 50))
    grid.save(tmp_path / "results" / "rgb" / "epoch_001.png")
    results.docs_gif("rgb", top_half=True)
    gif = Image.open(tmp_path / "docs" / "rgb_progress.gif").convert("RGB")
    assert gif.size == (40, 30)
    assert gif.getpixel((0, 0)) == (255, 255, 255) and gif.getpixel((20, 29)) == (255, 0, 0)


def results_command(tmp_path, *argv, patch=""):
    """`python benchmarks/results.py *argv` in a process of its own, its docs/ and models/ in tmp_path, where a
    tmp_path/<arch>.py stands in for a training script; patch: a line run before main(), to replace a part."""
    return [sys.executable, "-c", "import importlib.util, pathlib, sys\n"
            f"spec = importlib.util.spec_from_file_location('results', {str(RESULTS)!r})\n"
            "results = importlib.util.module_from_spec(spec); spec.loader.exec_module(results)\n"
            f"results.HERE = results.DOCS = pathlib.Path({str(tmp_path)!r})\n"
            f"results.DB = results.HERE / 'results.json'\n{patch}\n"
            f"sys.argv = ['results.py', *{list(argv)!r}]\n"
            "results.common.cli(results.main)\n"]  # as `python benchmarks/results.py ...` runs it


def test_results_terminated_takes_its_training_run_with_it(tmp_path):
    """`kill <pid of results.py>` stops the training script it started too, rather than leaving it running beside
    whatever is started next (the script here stands in for a training run: it writes its pid and sleeps)."""
    (tmp_path / "fake.py").write_text("import os, pathlib, time\n"
                                      "pathlib.Path('child.pid').write_text(str(os.getpid()))\ntime.sleep(120)\n")
    with open(tmp_path / "stderr.txt", "w") as err:  # a file, not a pipe: a child left running would hold a pipe open
        parent = subprocess.Popen(results_command(tmp_path, "table", "--only", "fake:mnist"), cwd=tmp_path, stderr=err)
    pid_file = tmp_path / "child.pid"
    for _ in range(600):
        if pid_file.exists() and pid_file.read_text() or parent.poll() is not None:
            break
        time.sleep(0.1)
    assert pid_file.exists(), (tmp_path / "stderr.txt").read_text()
    child = int(pid_file.read_text())
    parent.terminate()
    parent.wait(timeout=60)
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        pass  # killed and reaped, as it should be
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("results.py was terminated but its training run went on")
    err = (tmp_path / "stderr.txt").read_text()
    assert parent.returncode == 1 and "results.py: terminated" in err and "Traceback" not in err


def test_results_refuse_to_train_on_another_machine_than_the_tables(tmp_path):
    """A row or curve point trained on another CPU would sit in the table as if comparable (its minutes and its FID
    both move with the CPU model): results.py says so in one line and trains nothing; on the table's own machine it
    goes on."""
    (tmp_path / "fake.py").write_text("import pathlib; pathlib.Path('trained').write_text('')\n")
    cmd = results_command(tmp_path, "table", "--only", "fake:mnist", "--device", "cpu",
                          patch="results.measure = lambda *a, **k: sys.exit('measured')")
    other = {"rows": [{**row("dcgan", 0, 20.0), "device": "cpu: Another CPU (2 threads, AVX512)"}]}
    (tmp_path / "results.json").write_text(json.dumps(other))
    before = (tmp_path / "results.json").read_text()
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "come from cpu: Another CPU (2 threads, AVX512), this is cpu: " in out.stderr
    assert not (tmp_path / "trained").exists() and (tmp_path / "results.json").read_text() == before

    here = common.device_name(common.get_device("cpu"))
    (tmp_path / "results.json").write_text(json.dumps({"rows": [{**row("dcgan", 0, 20.0), "device": here}]}))
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert (tmp_path / "trained").exists() and "measured" in out.stderr, out.stderr


def test_the_fid_minutes_figure_draws_partial_curves_and_fids_under_ten(monkeypatch, tmp_path):
    """The FID-vs-minutes figure is drawn from results.json's points alone, for a finished curve, a partial one and
    FIDs below 10 (where a log axis must not be asked to start at 0), without a warning."""
    import warnings
    results = load_results(monkeypatch, tmp_path)
    full = [{"arch": "dcgan", "dataset": "fashion-mnist", "epoch": e, "fid": 150 / e, "train_seconds": 60 * e,
             "device": "cpu: Test CPU (2 threads, AVX512)"} for e in results.CURVE_EPOCHS]
    partial = [{**full[0], "arch": "wgan", "fid": 150.0, "train_seconds": 50}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results.curves_figure("fashion-mnist", {"curves": full + partial})
    assert (tmp_path / "docs" / "fid_minutes_fashion_mnist.png").stat().st_size > 10000
    assert min(c["fid"] for c in full) < 10


@pytest.mark.parametrize("run_on_disk", [True, False])
def test_a_curve_takes_its_minutes_from_one_run(monkeypatch, tmp_path, run_on_disk):
    """Points already measured are kept while their run is on disk (it resumes); a run trained again from scratch
    (on another disk) times every point again, or the curve would mix two runs' minutes."""
    results = load_results(monkeypatch, tmp_path)
    old = [{"arch": "wgan", "dataset": "fashion-mnist", "epoch": e, "fid": 100.0, "train_seconds": 90 * e,
            "g_updates": 1, "device": "old"} for e in results.CURVE_EPOCHS[:3]]
    results.save_db({"rows": [], "curves": old, "floors": {}})
    if run_on_disk:
        (tmp_path / "models" / "wgan_fashion_mnist").mkdir(parents=True)
        (tmp_path / "models" / "wgan_fashion_mnist" / "last.pt").write_bytes(b"")
    trained = []
    monkeypatch.setattr(results, "train", lambda arch, dataset, epoch, *a: trained.append(epoch) or epoch)
    monkeypatch.setattr(results, "measure", lambda ckpts, n, args, kid: [{"fid": 50.0}])
    monkeypatch.setattr(results.common, "load_checkpoint",
                        lambda epoch: {"train_seconds": 60 * epoch, "step": epoch, "args": {}, "device": "new"})
    results.do_curve("wgan", "fashion-mnist", SimpleNamespace(force=False), results.load_db())
    points = {c["epoch"]: c for c in results.load_db()["curves"]}
    assert sorted(points) == results.CURVE_EPOCHS
    assert trained == (results.CURVE_EPOCHS[3:] if run_on_disk else results.CURVE_EPOCHS)
    kept = {e for e, c in points.items() if c["device"] == "old"}
    assert kept == (set(results.CURVE_EPOCHS[:3]) if run_on_disk else set())
    assert all(c["train_seconds"] == 60 * e for e, c in points.items() if e not in kept)


def load_benchmark(monkeypatch, name):
    """benchmarks/<name>.py as a module; the sys.path entries it adds are put back after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_speckle_study_changes_what_each_candidate_names_and_nothing_else(monkeypatch):
    """benchmarks/mlp_gan_speckle.py swaps vanilla_gan's networks in its process: each candidate's G and D, as
    vanilla_gan.main would build them, are the shipped ones but for the candidate's change, and train a step."""
    import torch
    import dcgan
    import vanilla_gan
    study = load_benchmark(monkeypatch, "mlp_gan_speckle")
    shipped = vanilla_gan.Generator, vanilla_gan.Discriminator
    for name in ("Generator", "Discriminator"):
        monkeypatch.setattr(vanilla_gan, name, getattr(vanilla_gan, name))  # put back after the test
    dropouts = {"no_input_dropout": [0.0, 0.5, 0.5], "no_dropout": [0.0, 0.0, 0.0], "deep_d": [0.2, 0.5, 0.5, 0.5],
                "conv_d": []}
    for cand in study.CANDIDATES:
        vanilla_gan.Generator, vanilla_gan.Discriminator = shipped
        study.patch(cand)
        torch.manual_seed(0)
        G = vanilla_gan.Generator(latent_dim=8, channels=1, image_size=32, n_classes=0, width=10)
        D = vanilla_gan.Discriminator(channels=1, image_size=32, n_classes=0, width=10)
        assert type(G) is (dcgan.Generator if cand == "conv_g" else shipped[0]), cand
        assert isinstance(D, dcgan.Discriminator if cand == "conv_d" else shipped[1]), cand
        assert [m.p for m in D.modules() if isinstance(m, torch.nn.Dropout)] == dropouts.get(cand, [0.2, 0.5, 0.5])
        maxouts = [m.linear.weight.shape for m in D.modules() if isinstance(m, vanilla_gan.Maxout)]
        assert maxouts == {"conv_d": [], "deep_d": [(10, 1024), (10, 2), (10, 2)]}.get(cand, [(10, 1024), (10, 2)])
        args = vanilla_gan.parse_args(["--latent-dim", "8", *study.CANDIDATES[cand]])
        opts = [torch.optim.Adam(net.parameters(), lr=args.lr) for net in (G, D)]
        stats = vanilla_gan.train_step(G, D, *opts, torch.rand(4, 1, 32, 32) * 2 - 1, None, args, True)
        assert torch.isfinite(stats["loss/d"]) and torch.isfinite(stats["loss/g"]), cand


def test_the_speckle_study_measures_each_candidate_once(data_root, tmp_path, monkeypatch):
    """A finished candidate's FID is kept: adding a candidate, or drawing the figure again, measures no other again;
    another N, or the run trained again, is another measurement."""
    import shutil
    import vanilla_gan
    study = load_benchmark(monkeypatch, "mlp_gan_speckle")
    measured = []
    monkeypatch.setattr(study.ev, "measure", lambda a, device: measured.append(a.n) or [{"fid": 100.0 + a.n}])
    for seed, n in ((0, 50), (0, 50), (0, 60), (1, 60)):
        run = tmp_path / "mnist" / "models" / "shipped"
        if seed and run.exists():
            shutil.rmtree(run)
            shutil.rmtree(tmp_path / "mnist" / "results" / "shipped")
        if not run.exists():
            assert train(vanilla_gan, data_root, "--epochs", "1", "--out", str(tmp_path / "mnist"), "--name",
                         "shipped", "--seed", str(seed)) == 0
        monkeypatch.setattr(sys, "argv", ["mlp_gan_speckle.py", "--dataset", "mnist", "--candidates", "shipped",
                                          "--epochs", "1", "--n", str(n), "--out", str(tmp_path)])
        study.main()
    assert measured == [50, 60, 60]
    assert len(json.loads((tmp_path / "mnist" / "fids.json").read_text())) == 3
    assert (tmp_path / "mnist" / "speckle.png").stat().st_size > 1000


def test_the_ema_study_trains_the_scripts_run_bit_for_bit_and_writes_each_variant(data_root, monkeypatch, tmp_path):
    """benchmarks/ema.py: the run's own checkpoints equal a plain run's; each variant is written at the epochs asked
    for and measured once per epoch; an EMA without warm-up is torch's EMA of G's weights, the warm-up's first update
    keeps 2/11 of the average, and a _bn variant's running statistics are recomputed, its weights untouched."""
    import torch
    import dcgan
    from conftest import TINY, weights, assert_identical
    ema = load_benchmark(monkeypatch, "ema")
    measured = []
    monkeypatch.setattr(ema.ev, "measure", lambda a, device: measured.append(a.ckpt) or [
        {"checkpoint": c, "epoch": int(Path(c).stem[-3:]), "fid": 10.0 + i} for i, c in enumerate(a.ckpt)])
    updates = []
    real_update = torch.optim.swa_utils.AveragedModel.update_parameters
    monkeypatch.setattr(torch.optim.swa_utils.AveragedModel, "update_parameters",
                        lambda self, G: updates.append({k: v.clone() for k, v in G.state_dict().items()})
                        or real_update(self, G))
    argv = ["--dataset", "mnist", "--data-root", str(data_root), *TINY, "--epochs", "2", "--d-steps", "2"]
    variants = "ema0.9,ema0.5_warm,ema0.9_bn,G_bn"
    rows = ema.main(["--script", "dcgan", "--variants", variants, "--at", "1,2", "--n", "10", "--bn-batches", "2",
                     *argv, "--out", str(tmp_path / "study")])
    study = list(updates)
    assert train(dcgan, data_root, "--epochs", "2", "--d-steps", "2", "--out", str(tmp_path / "plain")) == 0
    models, plain = tmp_path / "study" / "models" / "dcgan_mnist", tmp_path / "plain" / "models" / "dcgan_mnist"
    for e in (1, 2):
        assert_identical(weights(models / f"epoch_00{e}.pt"), weights(plain / f"epoch_00{e}.pt"))
    assert sorted(r["variant"] for r in rows) == sorted(["G", *variants.split(",")] * 2)
    assert len(measured) == 1 and len(measured[0]) == 10
    # 64 images, batch 8: 8 steps an epoch, G updated at every second one (3 averages updated each time)
    G_states = study[::3]  # the study's two averages, then the script's own
    assert len(G_states) == 8 and all(len(study[i::3]) == 8 for i in range(3))
    load = lambda v, e: torch.load(models / v / f"epoch_00{e}.pt", weights_only=True)["G"]  # noqa: E731
    G1 = torch.load(models / "epoch_001.pt", weights_only=True)["G"]
    key = next(k for k in G1 if k.endswith("weight") and G1[k].dim() == 4)
    expect = G_states[0][key]
    for s in G_states[1:4]:
        expect = 0.9 * expect + 0.1 * s[key]
    assert torch.allclose(load("ema0.9", 1)[key], expect, atol=1e-6)
    warm = G_states[0][key]
    for n, s in enumerate(G_states[1:4], 1):  # update n keeps min(0.5, (1 + n) / (10 + n)): 2/11, 3/12, 4/13
        warm = (1 + n) / (10 + n) * warm + (1 - (1 + n) / (10 + n)) * s[key]
    assert torch.allclose(load("ema0.5_warm", 1)[key], warm, atol=1e-6)
    bn, plain_bn = load("ema0.9_bn", 2), load("ema0.9", 2)
    assert all(torch.equal(bn[k], plain_bn[k]) for k in bn if "running" not in k and "num_batches" not in k)
    assert not any(torch.equal(bn[k], plain_bn[k]) for k in bn if "running_mean" in k)
    G_bn, G2 = load("G_bn", 2), torch.load(models / "epoch_002.pt", weights_only=True)["G"]
    assert torch.equal(G_bn[key], G2[key]) and not torch.equal(G_bn[key], load("ema0.9", 2)[key])
    again = ema.main(["--script", "dcgan", "--variants", variants, "--at", "1,2", "--n", "10", "--bn-batches", "2",
                      *argv, "--out", str(tmp_path / "study")])  # done: measured again, not trained again
    assert len(again) == 10 and len(updates) == 8 * 3 + 8  # (and the plain run's own average)
