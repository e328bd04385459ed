"""SN-GAN: Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative Adversarial Networks", 2018.
https://arxiv.org/abs/1802.05957

D kept 1-Lipschitz by normalising its weights instead of penalising its gradient: every weight matrix W of D is
used as W / sigma(W), sigma(W) its largest singular value, estimated by one power iteration per forward pass. D
is then trained with the hinge loss, the paper's best results with this network:

    D minimises   E_x[max(0, 1 - D(x))] + E_z[max(0, 1 + D(G(z)))]        with every W of D as W / sigma(W)
    G minimises   -E_z[D(G(z))]

Why: a layer x -> W x changes its output by at most sigma(W) times the change of its input, and LeakyReLU by at
most 1, so D's Lipschitz constant is at most the product of its layers' sigmas: 1. WGAN-GP asks for gradient norm
1 only at sampled points, at the price of a double backward; weight clipping shrinks every direction of W at
once. Spectral normalisation bounds the whole function for one matrix-vector product per layer and step, and it
keeps the other singular values free, so D does not collapse to the simplest functions. The hinge loss: a
margin, so D stops pushing real samples above 1 and fakes below -1 (the paper's FID 25.5 against 29.3 with the
GAN loss, standard CNN on CIFAR-10).

Networks: the paper's "standard CNN" (Table 3): G from a dense layer to 4 x 4 x 512, deconvolutions with
BatchNorm and ReLU, a 3 x 3 convolution and Tanh; D of seven convolutions with LeakyReLU(0.1) and no
normalisation but spectral normalisation, then a dense layer. For 64 x 64 images its straightforward extension:
one more block in each (an extension of ours: the paper's 48 x 48 STL-10 networks keep the layer count and start
from 6 x 6). Optimiser: Table 1's setting C, Adam with alpha 0.0002, beta1 0.5, beta2 0.999 and n_dis = 1. B and C
take one D update per G update, the other four settings five; C is B at twice the learning rate.
pfnet-research/chainer-gan-lib trains this network with setting C too (example.sh), but with the GAN loss
(`--algorithm stdgan`, softplus), not the hinge. Batch 64, z of 128 ~ N(0, I).

Not as in the paper: G's update reuses the z of D's update, so G is scored on the very fakes D has just stepped
against (a cheap, common choice; a fresh draw would not be); weights start at N(0, 0.02), as the authors' code.

Sampling: grids and eval.py run G with BatchNorm's running statistics (eval mode), as chainer-gan-lib does.

Conditional (--conditional): G(z, y) gets y one-hot concatenated to z, as in dcgan.py; D uses a projection
(Miyato & Koyama 2018, by the same authors): D(x, y) = w.phi(x) + embed(y).phi(x), the embedding spectrally
normalised like every weight of D.

    python sngan.py --dataset mnist --epochs 5
    python sngan.py --dataset cifar10 --epochs 25
    python sngan.py --dataset mnist --conditional
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm
from torch.optim.swa_utils import AveragedModel

import common


def parse_args(argv=None):
    # Table 1's setting C: Adam alpha = 0.0002, beta1 = 0.5, beta2 = 0.999, n_dis = 1; minibatch 64; z of 128
    p = common.arg_parser(__doc__, lr=2e-4, batch_size=64, d_steps=1, latent_dim=128)
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (setting C: 0.5)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (setting C: 0.999)")
    p.add_argument("--width", type=common.positive_int, default=64, help="channels of G's last and D's first layer")
    return common.finish_args(p, argv, arch="sngan")


def init_weights(m):
    # the authors' code: every weight from N(0, 0.02), D's class embedding too; BatchNorm's scales 1, shifts 0
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)


class Generator(nn.Module):
    """z (B, latent_dim) [+ y] -> image (B, channels, S, S) in [-1, 1]; S = 32 or 64.

    Table 3: a dense layer to (512, 4, 4), deconvolutions doubling the size with BatchNorm and ReLU, then a 3 x 3
    convolution to the image and Tanh. Biases are dropped before BatchNorm, which cancels them.
    """

    def __init__(self, latent_dim, channels, image_size, n_classes=0, width=64):
        super().__init__()
        self.n_classes, self.c = n_classes, width * image_size // 4  # 512 at 32x32, 1024 at 64x64
        self.dense = nn.Sequential(nn.Linear(latent_dim + n_classes, self.c * 16, bias=False),
                                   nn.BatchNorm1d(self.c * 16), nn.ReLU(inplace=True))  # (B, c * 4 * 4)
        layers, c = [], self.c
        while c > width:  # (B, c/2, 8, 8) -> ... -> (B, width, S, S)
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c // 2),
                       nn.ReLU(inplace=True)]
            c //= 2
        layers += [nn.Conv2d(width, channels, 3, stride=1, padding=1), nn.Tanh()]  # (B, channels, S, S)
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z, y=None):
        if self.n_classes:
            z = torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1)  # (B, latent_dim + n_classes)
        return self.net(self.dense(z).view(-1, self.c, 4, 4))  # (B, c, 4, 4) -> (B, channels, S, S)


class Discriminator(nn.Module):
    """image (B, channels, S, S) [+ y] -> D(x) (B,), unbounded: a hinge-loss score.

    Table 3: seven convolutions, 3 x 3 ones that keep the size and 4 x 4 stride-2 ones that halve it, with
    LeakyReLU(0.1) and no normalisation layer; then a dense layer. Every weight is spectrally normalised.
    """

    def __init__(self, channels, image_size, n_classes=0, width=64):
        super().__init__()
        layers = [nn.Conv2d(channels, width, 3, stride=1, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        c, s = width, image_size  # (B, width, S, S)
        while s > 4:  # (B, c, s/2, s/2) then (B, 2c, s/2, s/2) -> ... -> (B, c, 4, 4): c = 512 at 32x32
            layers += [nn.Conv2d(c, c, 4, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True),
                       nn.Conv2d(c, c * 2, 3, stride=1, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            c, s = c * 2, s // 2
        self.features = nn.Sequential(*layers)  # phi(x): (B, c, 4, 4)
        self.out = nn.Linear(c * 16, 1)  # w.phi(x): (B, 1)
        self.embed = nn.Embedding(n_classes, c * 16) if n_classes else None  # projection: one vector per class
        self.apply(init_weights)
        for m in list(self.modules()):
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                spectral_norm(m)  # m.weight is now W / sigma(W); its power-iteration vectors u, v are buffers

    def forward(self, x, y=None):
        h = self.features(x).flatten(1)  # (B, c * 16)
        d = self.out(h).flatten()  # (B,)
        if self.embed is not None:
            d = d + (self.embed(y) * h).sum(1)  # + embed(y).phi(x)
        return d


def train_step(G, D, opt_G, opt_D, real, labels, args, update_G):
    """One D update on this batch of real images in [-1, 1]; then, when update_G (every d_steps-th batch), one G
    update, on the same z."""
    # --amp: G's and D's forward passes in bfloat16 (faster where the hardware has it); the losses in float32
    amp = torch.autocast(real.device.type, dtype=torch.bfloat16, enabled=args.amp)
    z = torch.randn(real.size(0), args.latent_dim, device=real.device)
    with amp, torch.set_grad_enabled(update_G):  # G's graph is kept only for the batches that update G
        fake = G(z, labels)

    # (1) Update D: minimise E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
    with amp:
        d_real = D(real, labels).float()  # (B,)
        d_fake = D(fake.detach(), labels).float()  # (B,); detach: this step must not touch G's gradients
    d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    opt_D.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_D.step()
    stats = {"loss/d": d_loss.detach(), "loss/g": None,
             "score/real": d_real.mean().detach(), "score/fake": d_fake.mean().detach()}

    # (2) Update G: minimise -E[D(G(z))]
    if update_G:
        D.requires_grad_(False)  # D only judges here: no gradients for its weights (under DDP: no all-reduce)
        with amp:
            d_fake = D(fake, labels).float()  # (B,), by the updated D
        g_loss = -d_fake.mean()
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
