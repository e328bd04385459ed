"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks", 2015. https://arxiv.org/abs/1511.06434

The GAN game (Goodfellow et al. 2014), played by all-convolutional networks:

    D maximises   E_x[log D(x)] + E_z[log(1 - D(G(z)))]
    G maximises   E_z[log D(G(z))]          (the "non-saturating" form: strong gradients while D wins early on)

with D(x) = sigmoid(logit(x)); both losses are binary cross-entropy on logits (BCEWithLogits), which is the
same objective computed without overflowing log(sigmoid).

Conditional (--conditional): G(z, y) gets y one-hot concatenated to z, as in Mirza & Osindero 2014; D uses a
projection (Miyato & Koyama 2018): logit(x, y) = w.phi(x) + embed(y).phi(x). Projection adds one embedding and
leaves the paper's conv stack unchanged, where label channels would change D's input layer; it is also the
conditioning that trains best in practice.

    python dcgan.py --dataset mnist --epochs 5
    python dcgan.py --dataset cifar10 --epochs 25
    python dcgan.py --dataset mnist --conditional
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import common


def parse_args(argv=None):
    # Section 4 of the paper: Adam, lr 0.0002, beta1 0.5; minibatch 128; z of 100 (Fig. 1)
    p = common.arg_parser(__doc__, lr=2e-4, batch_size=128, latent_dim=100)
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (paper: 0.5, 0.9 oscillated)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (not given in the paper: PyTorch's default)")
    p.add_argument("--width", type=common.positive_int, default=64, help="channels of G's last and D's first layer")
    return common.finish_args(p, argv, arch="dcgan")


def init_weights(m):
    # "All weights were initialized from a zero-centered Normal distribution with standard deviation 0.02";
    # D's class embedding too, as it acts as a per-class output layer. BatchNorm's scale ~ N(1, 0.02) is not in
    # the paper: it follows the PyTorch DCGAN example.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, latent_dim) [+ y] -> image (B, channels, S, S) in [-1, 1]; S = 32 or 64.

    Fractional-strided convolutions double the size each block; BatchNorm and ReLU everywhere except the output,
    which is Tanh without BatchNorm (DCGAN, Section 3). Conv biases are dropped before BatchNorm, which cancels them.
    """

    def __init__(self, latent_dim, channels, image_size, n_classes=0, width=64):
        super().__init__()
        self.n_classes = n_classes
        c = width * image_size // 8  # 512 at 64x64 (DCGAN's Fig. 1), 256 at 32x32
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
    """image (B, channels, S, S) [+ y] -> logit (B,).

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
        logit = self.out(h).flatten()  # (B,)
        if self.embed is not None:
            logit = logit + (self.embed(y) * h.flatten(1)).sum(1)  # + embed(y).phi(x)
        return logit


def train_step(G, D, opt_G, opt_D, real, labels, args):
    """One D update then one G update (k = 1, as the paper), on one batch of real images in [-1, 1]."""
    z = torch.randn(real.size(0), args.latent_dim, device=real.device)
    fake = G(z, labels)
    ones, zeros = torch.ones(real.size(0), device=real.device), torch.zeros(real.size(0), device=real.device)

    # (1) Update D: maximise log D(x) + log(1 - D(G(z)))  <=>  minimise BCE(D(x), 1) + BCE(D(G(z)), 0)
    d_real = D(real, labels)
    d_fake = D(fake.detach(), labels)  # detach: this step must not touch G's gradients
    d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()

    # (2) Update G: maximise log D(G(z))  <=>  minimise BCE(D(G(z)), 1)   (non-saturating)
    D.requires_grad_(False)  # D only judges here: no gradients for its weights (under DDP: no all-reduce)
    g_out = D(fake, labels)
    g_loss = F.binary_cross_entropy_with_logits(g_out, ones)
    opt_G.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_G.step()
    D.requires_grad_(True)

    return {"loss/d": d_loss.detach(), "loss/g": g_loss.detach(),
            "D(x)": torch.sigmoid(d_real).mean().detach(), "D(G(z))": torch.sigmoid(d_fake).mean().detach()}


def main(argv=None):
    args = parse_args(argv)
    device = common.get_device(args.device)
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

    run = common.Run(args, data, G, D, opt_G, opt_D, model_args, device)
    G, D = run.parallel(G, D)  # under torchrun: DistributedDataParallel (README); one process: G and D as they are
    for real, labels in run.batches():
        run.log(train_step(G, D, opt_G, opt_D, real, labels, args))


if __name__ == "__main__":
    common.cli(main)
