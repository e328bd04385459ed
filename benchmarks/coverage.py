"""Mode coverage: which classes a checkpoint's samples fall into, under a small classifier of the real data.

A small CNN is trained once on the dataset's training split (MNIST or Fashion-MNIST; 2 epochs, about 99 % / 90 %
test accuracy) and cached. Each checkpoint's N samples (mapped back to 28x28 uint8, as the metrics see them) are
classified, and the class histogram is summarised as

    coverage = exp(H(p)) / n_classes,   p = the share of samples in each class

1.0 when every class is drawn equally often, 1/n_classes (0.10) when every sample is one class: the
"effective number of classes" as a fraction. A collapsed GAN scores low even when its FID moves little.

    python benchmarks/coverage.py --ckpt models/vanilla_gan_mnist/epoch_00*.pt
    python benchmarks/coverage.py --ckpt models/dcgan_fashion_mnist --n 5000 --json coverage.json
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
import eval as ev  # noqa: E402

DATASETS = ("mnist", "fashion-mnist")


def classifier():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))  # (B, 10)


def prepare(x_uint8):
    return x_uint8.float() / 255 * 2 - 1  # (N, 1, 28, 28) in [-1, 1]


@torch.no_grad()
def accuracy(net, data):
    net.eval()
    pred = torch.cat([net(prepare(x)).argmax(1) for x in data.images.split(1000)])
    return (pred == data.labels).float().mean().item()


def trained_classifier(dataset, data_root, epochs=2):
    """The classifier of `dataset`, trained on its training split once (seed 0) and cached."""
    path = common.cache_dir() / f"classifier-{dataset}.pt"
    net = classifier()
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    train = common.load_dataset(dataset, data_root, 28)
    test = common.load_dataset(dataset, data_root, 28, split="test")
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train))
        for i in range(0, len(order) - 127, 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(net(prepare(train.images[idx])), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"classifier {dataset}: epoch {epoch + 1}, test accuracy {accuracy(net, test):.4f}", file=sys.stderr)
    common.atomic_save(net.state_dict(), path)
    return net.eval()


def coverage(counts):
    p = counts.float() / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return math.exp(entropy) / len(counts)


def measure(path, n, seed, data_root, device):
    G, ck = ev.load_generator(path, device)
    dataset = ck["data"]["dataset"]
    if dataset not in DATASETS:
        raise common.UserError(f"{path}: coverage needs a checkpoint trained on {' or '.join(DATASETS)}", 2)
    net = trained_classifier(dataset, data_root or ck["args"].get("data_root", "data"))
    x = ev.native_uint8(ev.generate(G, ev.latents(n, ck["model_args"]["latent_dim"], seed),
                                    ev.sample_labels(ck, n), device), ck)
    with torch.no_grad():
        counts = torch.bincount(torch.cat([net(prepare(b)).argmax(1) for b in x.split(500)]), minlength=10)
    return {"checkpoint": ck["path"], "arch": ck["arch"], "dataset": dataset, "epoch": ck["epoch"],
            "step": ck["step"], "n": n, "coverage": coverage(counts), "counts": counts.tolist()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", required=True, help="checkpoint files or run folders")
    p.add_argument("--n", type=common.positive_int, default=1000, help="samples per checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="where the dataset lives (default: the checkpoint's)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device("cpu")
    rows = [measure(c, args.n, args.seed, args.data_root, device) for c in args.ckpt]
    print(f"{'checkpoint':<48} {'epoch':>5} {'coverage':>8}  samples per class")
    for r in rows:
        print(f"{r['checkpoint'][-48:]:<48} {r['epoch']:>5} {r['coverage']:>8.2f}  {r['counts']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    common.cli(main)
