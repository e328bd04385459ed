"""Several processes (torchrun, DistributedDataParallel), tested on the CPU with the gloo backend: the global batch
is sharded as DistributedSampler shards it; one step of each script on 2 processes gives the gradients of 1 process
on the same global batch (synchronised BatchNorm, the gradient penalty in the critic's one backward, no all-reduce of
D's weights in the G step, clipping equal on every rank); a real torchrun run checkpoints from rank 0 only, loads in
a 1-process eval.py, resumes exactly with as many processes, and refuses another count in one line."""
import csv
import gc
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import common
import dcgan
import eval as ev
import parallel
import sngan
import wgan
from conftest import ROOT, SCRIPTS, TINY, assert_identical, call, weights

ids = [m.__name__ for m in SCRIPTS]
B, WORLD = 8, 2


def test_each_process_gets_distributed_samplers_shard_of_each_global_batch():
    """parallel.shard of an epoch's order for rank r equals DistributedSampler's (no shuffle) over that order: batch k
    of every rank comes from global batch k, the ranks never overlap, and together they are the 1-process batch."""
    from torch.utils.data.distributed import DistributedSampler
    n = 40
    data = common.Data("x", 1, 32, 28, "pad", [], torch.zeros(n, dtype=torch.long),
                       images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 32, 32).contiguous())
    order = common.epoch_order(n, 0, 3)
    shards = []
    for r in range(WORLD):
        shard = parallel.shard(order, B, r, WORLD)
        assert shard.tolist() == [order[i].item() for i in DistributedSampler(range(n), WORLD, r, shuffle=False)]
        batches = [((x[:, 0, 0, 0] + 1) * 127.5).round().long()  # each image holds its index
                   for x, _ in common.epoch_batches(data, shard, B // WORLD)]
        assert torch.cat(batches).tolist() == shard.tolist() and all(len(b) == B // WORLD for b in batches)
        shards.append(batches)
    for k in range(n // B):
        together = sorted(shards[0][k].tolist() + shards[1][k].tolist())
        assert together == sorted(order[k * B:(k + 1) * B].tolist())


def test_the_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(parallel, "world", lambda: (0, 3))
    data = common.Data("x", 1, 32, 28, "pad", [], torch.zeros(8, dtype=torch.long),
                       images=torch.zeros(8, 1, 32, 32, dtype=torch.uint8))
    args = dcgan.parse_args(["--batch-size", "128"])
    G, D = dcgan.Generator(latent_dim=100, channels=1, image_size=32), dcgan.Discriminator(channels=1, image_size=32)
    with pytest.raises(common.UserError, match="global batch.*3 processes.*try 126"):
        common.Run(args, data, G, D, None, None, {}, torch.device("cpu"), None)


# ----------------------------------------------------------------------------------------- one step, 1 vs 2 processes
def global_draws(monkeypatch, rank, world):
    """torch.randn / torch.rand as one process would draw them for the global batch, each rank taking its slice:
    z and the penalty's eps then match 1 process sample for sample (real runs draw per rank, from seed + rank)."""
    g = torch.Generator().manual_seed(123)
    for name in ("randn", "rand"):
        fn = getattr(torch, name)

        def draw(*size, fn=fn, device=None, **kw):
            full = fn(size[0] * world, *size[1:], generator=g)
            return full[rank * size[0]:(rank + 1) * size[0]].to(device)
        monkeypatch.setattr(torch, name, draw)


def models(script):
    torch.manual_seed(0)
    G = script.Generator(latent_dim=8, channels=1, image_size=32, width=8)
    D = script.Discriminator(channels=1, image_size=32, width=8)
    for m in D.modules():  # dropout masks are per-process random draws: off, so that the comparison is exact
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    args = script.parse_args(["--latent-dim", "8"])
    if script is wgan:
        opt_G, opt_D = (torch.optim.RMSprop(m.parameters(), lr=args.lr) for m in (G, D))
    else:
        opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=args.lr, betas=(args.beta1, args.beta2)) for m in (G, D))
    return G, D, opt_G, opt_D, args


def one_step(script, rank, world, out):
    """One train_step (with a G update) on this rank's slice of a fixed global batch. -> grads, weights, stats and
    the number of all-reduces of G's and D's gradients (counted by a DDP comm hook)."""
    G, D, opt_G, opt_D, args = models(script)
    args.out, args.batch_size = out, B
    data = common.Data("x", 1, 32, 28, "pad", [], torch.zeros(B, dtype=torch.long),
                       images=torch.zeros(B, 1, 32, 32, dtype=torch.uint8))
    run = common.Run(args, data, G, D, opt_G, opt_D, {}, torch.device("cpu"), None)
    G_step, D_step = run.parallel(G, D)  # as the scripts: BatchNorm synchronised, DDP (2 processes)
    counts = {"G": 0, "D": 0}
    if world > 1:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
        for name, m in (("G", G_step), ("D", D_step)):
            def hook(state, bucket, name=name):
                counts[name] += 1
                return allreduce_hook(state, bucket)
            m.register_comm_hook(dist.group.WORLD, hook)
    real = torch.rand(B, 1, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    b = B // world
    with pytest.MonkeyPatch.context() as mp_:
        global_draws(mp_, rank, world)
        real = real[rank * b:(rank + 1) * b].contiguous(memory_format=torch.channels_last)
        stats = script.train_step(G_step, D_step, opt_G, opt_D, real, None, args, True)
    grads = {f"{n}.{k}": p.grad.clone() for n, m in (("G", G), ("D", D)) for k, p in m.named_parameters()
             if p.grad is not None}
    weights = {f"{n}.{k}": v.clone() for n, m in (("G", G), ("D", D)) for k, v in m.state_dict().items()}
    return grads, weights, {k: float(v) for k, v in stats.items() if v is not None}, counts


def worker(rank, path, out):
    """One process of two: one step of every script (its results to out.<script>.<rank>), then spectral
    normalisation's buffers as parallel.wrap leaves them (out.buffers.<rank>)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD)
    for script in SCRIPTS:
        result = one_step(script, rank, WORLD, f"{out}.{script.__name__}.run{rank}")
        stats = torch.tensor(list(result[2].values()))  # the logged figures, averaged over the ranks as Logger does
        dist.all_reduce(stats)
        torch.save((result[0], result[1], dict(zip(result[2], (stats / WORLD).tolist())), result[3]),
                   f"{out}.{script.__name__}.{rank}")
        gc.collect()  # as common.cli does: DDP's wrappers freed before the process group, not after it at exit
    torch.manual_seed(rank)  # as under torchrun (seed + rank): other random buffers in every process
    G = sngan.Generator(latent_dim=8, channels=1, image_size=32, width=8)
    D = sngan.Discriminator(channels=1, image_size=32, width=8)
    before = {k: v.clone() for k, v in D.state_dict().items() if k.endswith(("_u", "_v"))}
    G_step, D_step = parallel.wrap(G, D, torch.device("cpu"))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    D_step(x).mean().backward()  # a training-mode forward: one power iteration, from the vectors every rank holds
    after = {k: v.clone() for k, v in D.state_dict().items() if k.endswith(("_u", "_v"))}
    torch.save((before, after), f"{out}.buffers.{rank}")
    del G_step, D_step
    gc.collect()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The results of worker's two processes (one spawn: each process imports torch once for all the checks)."""
    folder = tmp_path_factory.mktemp("two_processes")
    mp.spawn(worker, args=(str(folder / "pg"), str(folder / "out")), nprocs=WORLD)
    return folder / "out"


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
def test_two_processes_compute_the_gradients_of_one(script, tmp_path, two_processes):
    G, D = models(script)[:2]
    start = {f"{n}.{k}": p.detach().clone() for n, m in (("G", G), ("D", D)) for k, p in m.named_parameters()}
    grads1, weights1, stats1, _ = one_step(script, 0, 1, str(tmp_path / "run"))
    results = [torch.load(f"{two_processes}.{script.__name__}.{r}", weights_only=True) for r in range(WORLD)]
    for grads, params, stats, counts in results:
        assert grads.keys() == grads1.keys()
        for k in grads1:  # DDP's average of the per-rank gradients = the gradient of the global batch's loss, up to
            scale = grads1[k].abs().max().item()  # the order of float additions: 1e-5 of the tensor's largest entry
            torch.testing.assert_close(grads[k], grads1[k], rtol=0, atol=1e-5 * scale, msg=lambda m, k=k: f"{k}: {m}")
        for k in weights1:  # after the optimizer step (and WGAN's clipping): the same weights and BN statistics. Adam
            # and RMSprop move a weight whose gradient is ~0 by up to ~10 lr either way, so atol is 1e-3 here
            torch.testing.assert_close(params[k], weights1[k], rtol=1e-4, atol=1e-3, msg=lambda m, k=k: f"{k}: {m}")
        # ...which one step's change (~lr, 1e-4 to 5e-5 here) would pass unmade: the changes of the weights agree
        moved1, moved = (torch.cat([(w[k] - start[k]).flatten() for k in start]) for w in (weights1, params))
        assert moved1.abs().max() > 0 and torch.nn.functional.cosine_similarity(moved, moved1, dim=0) > 0.99
        for k in stats1:
            assert stats[k] == pytest.approx(stats1[k], rel=1e-4, abs=1e-6), k
        # one all-reduce for D (its own step) and one for G: D frozen in the G step sends nothing
        assert counts == {"G": 1, "D": 1}
    for k in results[0][1]:  # and every rank holds the very same weights
        assert torch.equal(results[0][1][k], results[1][1][k]), k


def test_every_process_starts_from_rank_0s_buffers(two_processes):
    """Spectral normalisation draws its power-iteration vectors at random in each process; parallel.wrap gives every
    process rank 0's, so that D's weights, normalised by them, stay equal on every rank."""
    (before0, after0), (before1, after1) = (torch.load(f"{two_processes}.buffers.{r}", weights_only=True)
                                            for r in range(2))
    assert before0.keys() == after0.keys() and len(before0) == 2 * 8  # u and v of 7 convolutions and the dense layer
    assert not all(torch.equal(before0[k], before1[k]) for k in before0)  # drawn apart...
    assert all(torch.equal(after0[k], after1[k]) for k in after0)  # ...equal once wrapped, and after a step


# ------------------------------------------------------------------------------------------------ a real torchrun
def torchrun(script, data_root, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
                           str(ROOT / f"{script}.py"), "--dataset", "mnist", "--data-root", str(data_root), *TINY,
                           *extra], capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_trains_checkpoints_from_rank_0_and_resumes_exactly(data_root, tmp_path, capsys):
    """SN-GAN stands for all six (each one's distributed step is checked above): BatchNorm synchronised in G, spectral
    normalisation's buffers in D."""
    script = "sngan"
    straight = torchrun(script, data_root, "--epochs", "2", "--name", "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert straight.stdout.count("done: 16 steps") == 1  # rank 0 reports; 8 steps an epoch at a global batch of 8
    assert torchrun(script, data_root, "--epochs", "1", "--name", "split").returncode == 0
    resumed = torchrun(script, data_root, "--epochs", "2", "--name", "split", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ck = torch.load(tmp_path / "models/straight/last.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng_ranks"]) == 2 and ck["args"]["batch_size"] == 8
    assert_identical(weights(tmp_path / "models/straight/last.pt"), weights(tmp_path / "models/split/last.pt"))
    rows = list(csv.DictReader(open(tmp_path / "results/split/losses.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 17))  # one writer: no duplicated rows
    assert (tmp_path / "results/straight/progress.gif").exists()
    # a 1-process eval.py loads it
    assert call(ev.main, ["--ckpt", str(tmp_path / "models/straight/last.pt"), "--n", "4"]) == 0
    # a 1-process resume is refused in one line, and nothing is written
    before = (tmp_path / "models/straight/last.pt").read_bytes()
    script_mod = {m.__name__: m for m in SCRIPTS}[script]
    capsys.readouterr()
    assert call(script_mod.main, ["--dataset", "mnist", "--data-root", str(data_root), *TINY, "--epochs", "3",
                                  "--name", "straight", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained by 2 processes" in err[0] and "--nproc_per_node=2" in err[0]
    assert (tmp_path / "models/straight/last.pt").read_bytes() == before
