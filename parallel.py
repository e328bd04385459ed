"""Several processes under torchrun: everything ganzoo does only when WORLD_SIZE > 1.

common.get_device() joins the process group (init), and a script's `G, D = run.parallel(G, D)` calls wrap():
BatchNorm synchronised over the processes, then DistributedDataParallel. common.Run also takes each process's share
of every global batch (shard), averages the logged figures over the processes (mean), and keeps every process's RNG
state in the checkpoint (gather), so that a resume with as many processes is exact. Nothing here imports the rest
of ganzoo.

Why it gives the gradients of one process: --batch-size is the global batch, split evenly; BatchNorm normalises with
the global batch's statistics; DDP averages the gradients of the per-process losses, each a mean over an equal share
of the batch. So N processes compute the gradient of the loss one process computes (tests/test_distributed.py).
"""
import inspect
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


def world():
    """(this process's rank, the number of processes): (0, 1) unless torchrun started several."""
    joined = dist.is_available() and dist.is_initialized()
    return (dist.get_rank(), dist.get_world_size()) if joined else (0, 1)


def init(device):
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from its environment): nccl on
    cuda:LOCAL_RANK, gloo on the CPU. -> this process's device."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


class AllReduceSum(torch.autograd.Function):
    """The sum over the processes, differentiable: each process's loss depends on every process's input through it,
    so its gradient is the sum of the processes' gradients (as inside torch's SyncBatchNorm). Written here because
    torch's own, torch.distributed.nn.functional.all_reduce, warns that it is deprecated (torch 2.14) in favour of
    a private module, torch.distributed._functional_collectives."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm:
    """What torch's SyncBatchNorm computes, on the CPU (its forward, and DDP, refuse CPU tensors: torch 2.14): in
    training, the statistics of the global batch over every dimension but the channels; in eval mode, BatchNorm's
    own forward with the running statistics. Mixed into BatchNorm1d and BatchNorm2d: the same state_dict."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)  # shape: to broadcast a (C,) vector
        n = x.numel() // x.size(1) * dist.get_world_size()  # values per channel in the global batch (equal shares)
        mean = AllReduceSum.apply(x.sum(dims)) / n  # (C,)
        centred = x - mean.view(shape)
        var = AllReduceSum.apply((centred * centred).sum(dims)) / n  # biased, as BatchNorm normalises with
        with torch.no_grad():  # the running statistics take the unbiased variance, as BatchNorm's do
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


class CPUSyncBatchNorm1d(CPUSyncBatchNorm, nn.BatchNorm1d):
    pass


class CPUSyncBatchNorm2d(CPUSyncBatchNorm, nn.BatchNorm2d):
    pass


def convert_sync_batchnorm(module, device):
    """Every BatchNorm of module replaced by a synchronised one holding the same parameters and buffers (so the
    optimizers, built before, still hold them), as torch's nn.SyncBatchNorm.convert_sync_batchnorm does; on
    CUDA, that function itself."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        synced = CPUSyncBatchNorm1d if type(module) is nn.BatchNorm1d else CPUSyncBatchNorm2d
        new = synced(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(module, name))
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


def wrap(G, D, device):
    """G and D with synchronised BatchNorm, each in DistributedDataParallel, which averages its gradients over the
    processes in backward. Every process starts from rank 0's weights (DDP copies them) and buffers, broadcast
    here: spectral normalisation's power-iteration vectors are drawn at random in each process, and DDP copies
    buffers itself only from torch 2.14 on (before, not with broadcast_buffers=False). Buffers are not broadcast at
    each forward: synchronised BatchNorm keeps them equal, spectral normalisation's follow the equal weights, and a
    broadcast between D's real and fake passes would modify tensors that backward still needs."""
    for b in list(G.buffers()) + list(D.buffers()):
        dist.broadcast(b, 0)
    new = "forward_sync_buffers" in inspect.signature(DDP).parameters  # torch >= 2.14's name for broadcast_buffers
    kw = {"device_ids": [device.index] if device.type == "cuda" else None,
          "forward_sync_buffers" if new else "broadcast_buffers": False}
    return (DDP(convert_sync_batchnorm(G, device), **kw), DDP(convert_sync_batchnorm(D, device), **kw))


def shard(order, batch_size, rank, world_size):
    """Process `rank`'s share of each global batch of an epoch's order: DistributedSampler's, order[rank::world]."""
    return order.view(-1, batch_size)[:, rank::world_size].reshape(-1)


def mean(x):
    """x averaged over the processes (the global batch's figures), equal on every process."""
    dist.all_reduce(x)
    return x / dist.get_world_size()


def gather(obj):
    """Every process's obj (their RNG states), in rank order."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def close():
    """Leave the process group once every process is done with it."""
    import gc
    dist.barrier()
    # free DDP's wrappers (they can sit in reference cycles) while the group lives: torn down after it, at exit,
    # they can abort the process (std::terminate; seen in tests/test_distributed.py's workers)
    gc.collect()
    dist.destroy_process_group()
