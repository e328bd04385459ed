"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", 2015. https://arxiv.org/abs/1511.06434

The GAN game (Goodfellow et al. 2014), played by all-convolutional networks, D(x) = sigmoid(d(x)) with d a logit:

    D minimises   -E_x[log D(x)] - E_z[log(1 - D(G(z)))]
    G minimises   -E_z[log D(G(z))]          (the "non-saturating" form: strong gradients while D wins early on)

-log sigmoid(a) = softplus(-a) and -log(1 - sigmoid(a)) = softplus(a): the losses below are binary cross-entropy
on logits, written so that no log(sigmoid) overflows.

Not as in the paper: G's update reuses the z of D's update, so G is scored on the very fakes D has just stepped
against (a cheap, common choice, one G forward fewer; a fresh draw would not be); BatchNorm's scales start at
N(1, 0.02) (the PyTorch DCGAN example's choice; DCGAN's paper says only that weights start at N(0, 0.02));
z ~ N(0, I), as in the PyTorch example (the paper's Fig. 1 draws it from a uniform distribution).

Sampling: grids and eval.py run G with BatchNorm's running statistics (eval mode), where the authors' code
samples with each batch's own: on CIFAR-10 at epoch 10 they score FID 106.6 against 110.7; and they run the average
of G (--ema 0.999), not in the paper: at epoch 25 it scores 76.8 against G's 112.7 (N = 2000, docs/averaging.md).

Conditional (--conditional): G(z, y) gets y one-hot concatenated to z, as in Mirza & Osindero 2014; D uses a
projection (Miyato & Koyama 2018): D(x, y) = w.phi(x) + embed(y).phi(x), which adds one embedding and leaves the
paper's conv stack unchanged, where label channels would change D's input layer.

    python dcgan.py --dataset mnist --epochs 5
    python dcgan.py --dataset cifar10 --epochs 25
    python dcgan.py --dataset mnist --conditional
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

import common


def parse_args(argv=None):
    # Section 4: Adam, lr 0.0002, beta1 0.5; minibatch 128; z of 100 (Fig. 1); one D update per G update
    p = common.arg_parser(__doc__, lr=2e-4, batch_size=128, d_steps=1, ema=0.999)  # ema: docs/averaging.md
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (paper: 0.5, as 0.9 oscillated)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (not in the paper: PyTorch's default)")
    p.add_argument("--width", type=common.positive_int, default=64, help="channels of G's last and D's first layer")
    return common.finish_args(p, argv, arch="dcgan")


def init_weights(m):
    # "All weights were initialized from a zero-centered Normal distribution with standard deviation 0.02" (DCGAN),
    # D's class embedding too (a per-class output layer); BatchNorm's scales ~ N(1, 0.02), its shifts 0
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, latent_dim) [+ y] -> image (B, channels, S, S) in [-1, 1]; S = 32 or 64.

    Fractional-strided convolutions double the size each block; BatchNorm and ReLU everywhere except the output,
    which is Tanh without BatchNorm (Section 3). Conv biases are dropped before BatchNorm, which cancels them.
    """

    def __init__(self, latent_dim, channels, image_size, n_classes=0, width=64):
        super().__init__()
        self.n_classes = n_classes
        c = width * image_size // 8  # 256 at 32x32, 512 at 64x64; Fig. 1's 1024 at 64x64 is --width 128
        layers = [nn.ConvTranspose2d(latent_dim + n_classes, c, 4, stride=1, padding=0, bias=False),
                  nn.BatchNorm2d(c), nn.ReLU(inplace=True)]  # (B, c, 4, 4): the "project and reshape" of Fig. 1
        while c > width:  # (B, c/2, 8, 8) -> ... -> (B, width, S/2, S/2)
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Tanh()]  # (B, channels, S, S)
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z, y=None):
        if self.n_classes:
            z = torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1)  # (B, latent_dim + n_classes)
        return self.net(z[:, :, None, None])  # (B, latent_dim [+ n_classes], 1, 1) -> (B, channels, S, S)


class Discriminator(nn.Module):
    """image (B, channels, S, S) [+ y] -> d (B,), a logit: D(x) = sigmoid(d(x)).

    Strided convolutions halve the size each block; LeakyReLU(0.2); BatchNorm everywhere except the input layer.
    """

    def __init__(self, channels, image_size, n_classes=0, width=64):
        super().__init__()
        layers = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        c, s = width, image_size // 2  # (B, width, S/2, S/2)
        while s > 4:  # (B, 2c, S/4, S/4) -> ... -> (B, c, 4, 4): c = 256 at 32x32, 512 at 64x64
            layers += [nn.Conv2d(c, c * 2, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, inplace=True)]
            c, s = c * 2, s // 2
        self.features = nn.Sequential(*layers)  # phi(x): (B, c, 4, 4)
        self.out = nn.Conv2d(c, 1, 4, stride=1, padding=0)  # w.phi(x): (B, 1, 1, 1)
        self.embed = nn.Embedding(n_classes, c * 16) if n_classes else None  # projection: one vector per class
        self.apply(init_weights)

    def forward(self, x, y=None):
        h = self.features(x)  # (B, c, 4, 4)
        d = self.out(h).flatten()  # (B,)
        if self.embed is not None:
            d = d + (self.embed(y) * h.flatten(1)).sum(1)  # + embed(y).phi(x)
        return d


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
    # channels_last (NHWC): the layout CPU and CUDA convolution kernels run fastest, the same maths (docs/speed.md)
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
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
