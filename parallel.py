"""Several processes under torchrun: everything ganzoo does only when WORLD_SIZE > 1.

A run in one process never imports this file (copy a script and common.py without it and they still train). Under
torchrun, common.get_device() joins the process group (init), and a script's `G, D = run.parallel(G, D)` calls
wrap(): BatchNorm synchronised over the processes, then DistributedDataParallel. common.Run also takes each
process's share of every global batch (shard), averages the logged figures over the processes (mean), and keeps
every process's RNG state in the checkpoint (gather), so that a resume with as many processes is exact.

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


def init(device):
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from its environment): nccl on
    cuda:LOCAL_RANK, gloo on the CPU. -> this process's device."""
    import common  # for UserError; common imports this module only under torchrun
    if device.type == "mps":
        raise common.UserError("torchrun: several processes train on CUDA GPUs (nccl) or the CPU (gloo), not on MPS", 2)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


class AllReduceSum(torch.autograd.Function):
    """The sum over the processes, differentiable: each process's loss depends on every process's input through it,
    so its gradient is the sum of the processes' gradients (as inside torch's SyncBatchNorm). Written here because
    torch's own, torch.distributed.nn.functional.all_reduce, is deprecated since torch 2.x in favour of a private
    module (torch.distributed._functional_collectives)."""

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


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with the statistics of the global batch, on the CPU: what torch's nn.SyncBatchNorm computes on
    CUDA (it refuses CPU tensors, torch 2.14). Same parameters, buffers and state_dict as BatchNorm2d."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        n = x.numel() // x.size(1) * dist.get_world_size()  # values per channel in the global batch (equal shares)
        mean = AllReduceSum.apply(x.sum((0, 2, 3))) / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = AllReduceSum.apply((centred * centred).sum((0, 2, 3))) / n  # biased, as BatchNorm normalises with
        with torch.no_grad():  # the running statistics take the unbiased variance, as BatchNorm's do
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y


def convert_sync_batchnorm(module, device):
    """Every BatchNorm2d of module replaced by a synchronised one holding the same parameters and buffers (so the
    optimizers, built before, still hold them), as torch's nn.SyncBatchNorm.convert_sync_batchnorm does; on
    CUDA, that function itself."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(module, name))
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module


def wrap(G, D, device):
    """G and D with synchronised BatchNorm, each in DistributedDataParallel, which averages its gradients over the
    processes in backward. Buffers are not broadcast: synchronised BatchNorm keeps them equal, and a broadcast
    between D's real and fake passes would modify tensors that backward still needs."""
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
