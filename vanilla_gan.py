"""GAN: Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville & Bengio, "Generative Adversarial
Networks", 2014. https://arxiv.org/abs/1406.2661

The two-player game, played by multilayer perceptrons on flattened images:

    min_G max_D   E_x[log D(x)] + E_z[log(1 - D(G(z)))]
    D maximises   E_x[log D(x)] + E_z[log(1 - D(G(z)))]
    G maximises   E_z[log D(G(z))]          (the "non-saturating" form, the paper's Section 3)

Why G does not minimise log(1 - D(G(z))) as the game says: early on D rejects G's samples with confidence,
log(1 - D(G(z))) saturates and its gradient vanishes, while log D(G(z)) has the same fixed point and strong
gradients exactly then. D(x) = sigmoid(d(x)) with d a logit; -log sigmoid(a) = softplus(-a) and
-log(1 - sigmoid(a)) = softplus(a), so the losses below are binary cross-entropy on logits without overflow.

Not as in the paper: BatchNorm after G's hidden layers (it came a year later; DCGAN showed it keeps G's samples
apart): with these MLPs as the paper builds them, G collapsed on MNIST, one blurred digit for every z after the
first epoch, and BatchNorm in G was the one change that prevented it among those tried, the paper's own
optimiser, initialisation, output layer and noise included (benchmarks/mlp_gan_collapse.py). Adam with DCGAN's
settings instead of the paper's SGD, which diverged within two epochs here; z ~ N(0, I), PyTorch's default
initialisation, a Tanh output (the authors' code: uniform z, small uniform weights, a sigmoid output); G's update
reuses the z of D's update, so G is scored on the very fakes D has just stepped against (a cheap, common choice; a
fresh draw would not be).

Sampling: grids and eval.py run G with BatchNorm's running statistics (eval mode), so that a sample does not
depend on the batch it was drawn in.

Conditional (--conditional): the label, one-hot, is concatenated to the input of both networks: to z in G and to
the flattened image in D (Mirza & Osindero 2014, "Conditional Generative Adversarial Nets", with MLPs as here).
D's input dropout covers the one-hot too, as it does every pixel: in training, D sees no label for about a fifth
of its samples.

    python vanilla_gan.py --dataset mnist --epochs 5
    python vanilla_gan.py --dataset cifar10 --epochs 25
    python vanilla_gan.py --dataset mnist --conditional
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

import common


def parse_args(argv=None):
    # Adam with DCGAN's lr 2e-4 and beta1 0.5, not the paper's SGD (mnist.yaml: lr 0.1, momentum 0.5 to 0.7), which
    # diverged here; minibatch 100, z of 100 and k = 1 D update per G update (Algorithm 1) are the paper's.
    p = common.arg_parser(__doc__, lr=2e-4, batch_size=100, d_steps=1)
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (DCGAN's 0.5)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (PyTorch's default)")
    p.add_argument("--width", type=common.positive_int, default=1200, help="units in each hidden layer of G, and "
                   "linear pieces in each of D (the paper's 1200 and 240 maxout units of 5 pieces)")
    return common.finish_args(p, argv, arch="vanilla_gan")


class Generator(nn.Module):
    """z (B, latent_dim) [+ y] -> image (B, channels, S, S) in [-1, 1]; S = 32 or 64.

    Two hidden layers of ReLU units, as the paper's MNIST generator (1200 each), with BatchNorm before each ReLU
    (not the paper's: see the docstring above); biases are dropped before BatchNorm, which cancels them. A Tanh
    output, the paper's sigmoid rescaled to the [-1, 1] range images are trained in.
    """

    def __init__(self, latent_dim, channels, image_size, n_classes=0, width=1200):
        super().__init__()
        self.n_classes, self.shape = n_classes, (channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim + n_classes, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),  # (B, width)
            nn.Linear(width, channels * image_size * image_size), nn.Tanh())  # (B, C*S*S)

    def forward(self, z, y=None):
        if self.n_classes:
            z = torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1)  # (B, latent_dim + n_classes)
        return self.net(z).view(-1, *self.shape)  # (B, C*S*S) -> (B, channels, S, S)


class Maxout(nn.Module):
    """The paper's D unit (Goodfellow et al. 2013): the max of `pieces` linear functions of the input. Piecewise
    linear and never saturating, it can learn its own activation's shape."""

    def __init__(self, n_in, units, pieces=5):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(n_in, units * pieces)

    def forward(self, x):
        return self.linear(x).view(-1, self.units, self.pieces).amax(2)  # (B, units * pieces) -> (B, units)


class Discriminator(nn.Module):
    """image (B, channels, S, S) [+ y] -> d (B,), a logit: D(x) = sigmoid(d(x)).

    The paper's MNIST D (the authors' mnist.yaml): two layers of 240 maxout units of 5 pieces, dropout 0.2 on its
    input and 0.5 on its hidden units (which keeps D from memorising the training images), a linear output. D reads
    pixels in [0, 1], the paper's range, not [-1, 1]: input dropout then blanks a pixel to the black background.
    On [-1, 1] it turned a fifth of every real image's background grey, D learnt to accept a noisy background, and
    G's samples stayed speckled (5-epoch MNIST FID at N = 2000: 194 on [-1, 1], 99 on [0, 1]).
    """

    def __init__(self, channels, image_size, n_classes=0, width=1200):
        super().__init__()
        self.n_classes, units = n_classes, width // 5
        self.net = nn.Sequential(
            nn.Dropout(p=0.2), Maxout(channels * image_size * image_size + n_classes, units),  # (B, units)
            nn.Dropout(p=0.5), Maxout(units, units),  # (B, units)
            nn.Dropout(p=0.5), nn.Linear(units, 1))  # (B, 1)

    def forward(self, x, y=None):
        x = (x.flatten(1) + 1) / 2  # (B, C*S*S) in [0, 1]: the background is 0, which dropout leaves as it is
        if self.n_classes:
            x = torch.cat([x, F.one_hot(y, self.n_classes).to(x.dtype)], dim=1)  # (B, C*S*S + n_classes)
        return self.net(x).flatten()  # (B,): d, a logit


def train_step(G, D, opt_G, opt_D, real, labels, args, update_G):
    """One D update on this batch of real images in [-1, 1]; then, when update_G (every d_steps-th batch), one G
    update, on the same z."""
    # --amp: G's and D's forward passes in bfloat16 (faster where the hardware has it); the losses in float32
    amp = torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=args.amp)
    z = torch.randn(real.size(0), args.latent_dim, device=real.device)
    with amp, torch.set_grad_enabled(update_G):  # G's graph is kept only for the batches that update G
        fake = G(z, labels)

    # (1) Update D: minimise -log D(x) - log(1 - D(G(z)))
    with amp:
        d_real = D(real, labels).float()  # (B,)
        d_fake = D(fake.detach(), labels).float()  # (B,); detach: this step must not touch G's gradients
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    stats = {"loss/d": d_loss.detach(), "loss/g": None,
             "D(x)": torch.sigmoid(d_real).mean().detach(), "D(G(z))": torch.sigmoid(d_fake).mean().detach()}

    # (2) Update G: minimise -log D(G(z))   (non-saturating)
    if update_G:
        D.requires_grad_(False)  # D only judges here: no gradients for its weights (under DDP: no all-reduce)
        with amp:
            d_fake = D(fake, labels).float()  # (B,), by the updated D
        g_loss = F.softplus(-d_fake).mean()
        opt_G.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_G.step()
        D.requires_grad_(True)
        stats["loss/g"] = g_loss.detach()
    return stats


def main(argv=None):
    args = parse_args(argv)
    device = common.get_device(args.device)
    torch.backends.cudnn.deterministic = True  # same seed, same weights on CUDA too (cuDNN's fastest kernels vary)
    common.seed_everything(args.seed)
    data = common.load_dataset(args.dataset, args.data_root, args.image_size, conditional=args.conditional,
                               workers=args.workers)
    model_args = dict(latent_dim=args.latent_dim, channels=data.channels, image_size=args.image_size,
                      n_classes=len(data.classes) if args.conditional else 0, width=args.width)
    G = Generator(**model_args).to(device)
    D = Discriminator(**{k: v for k, v in model_args.items() if k != "latent_dim"}).to(device)
    # fused=True: Adam's update in one pass over each tensor instead of about ten (same algorithm, faster)
    opt_G = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), fused=True)
    opt_D = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(args.beta1, args.beta2), fused=True)

    # --ema: samples (grids, eval.py) come from an exponential moving average of G's weights and BatchNorm statistics
    # (Yazici et al. 2019), and G and D play the game exactly as without it. 0: G itself (docs/averaging.md)
    G_ema = AveragedModel(G, multi_avg_fn=common.ema(args.ema), use_buffers=True)
    run = common.Run(args, data, G, D, opt_G, opt_D, model_args, device, G_ema)  # --resume: loads all five
    G, D = run.parallel(G, D)  # torchrun: synchronised BatchNorm and DistributedDataParallel (parallel.py)
    for epoch in range(run.start_epoch, args.epochs + 1):
        for real, labels in run.batches(epoch):  # images in [-1, 1]; labels: None unless --conditional
            run.step += 1
            update_G = run.step % args.d_steps == 0  # every d_steps-th batch, counted on across epoch ends
            run.log(train_step(G, D, opt_G, opt_D, real, labels, args, update_G))
            if update_G:
                G_ema.update_parameters(G)  # grids and eval.py sample from the average
            if run.step == args.max_steps:  # a short run (--max-steps) stops here, with a checkpoint
                run.grid(run.results / f"step_{run.step:07d}.png")
                run.checkpoint(run.models / "last.pt")
                return run.finish()
            if args.sample_every and run.step % args.sample_every == 0:
                run.grid(run.results / f"step_{run.step:07d}.png")
        run.grid(run.results / f"epoch_{epoch:03d}.png")  # the fixed z every epoch, also animated: progress.gif
        run.checkpoint(run.models / f"epoch_{epoch:03d}.pt")  # and last.pt; losses.csv -> losses.png
    run.finish()


if __name__ == "__main__":
    common.cli(main)
