"""GAN: Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville & Bengio, "Generative Adversarial
Networks", 2014. https://arxiv.org/abs/1406.2661

The two-player game, played by multilayer perceptrons on flattened images:

    min_G max_D   E_x[log D(x)] + E_z[log(1 - D(G(z)))]
    D maximises   E_x[log D(x)] + E_z[log(1 - D(G(z)))]
    G maximises   E_z[log D(G(z))]          (the "non-saturating" form, the paper's Section 3)

Why G does not minimise log(1 - D(G(z))) as the game says: early on D rejects G's samples with confidence,
log(1 - D(G(z))) saturates and its gradient vanishes, while log D(G(z)) has the same fixed point and strong
gradients exactly then. D(x) = sigmoid(logit(x)); both losses are binary cross-entropy on logits.

Conditional (--conditional): the label, one-hot, is concatenated to the input of both networks: to z in G and to
the flattened image in D (Mirza & Osindero 2014, "Conditional Generative Adversarial Nets", with MLPs as here).

    python vanilla_gan.py --dataset mnist --epochs 5
    python vanilla_gan.py --dataset cifar10 --epochs 25
    python vanilla_gan.py --dataset mnist --conditional
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import common


def parse_args(argv=None):
    # The paper trained with SGD and momentum (the authors' mnist.yaml: lr 0.1, minibatch 100); Adam with lr 2e-4
    # and beta1 0.5 (DCGAN's) trains these MLPs without the paper's hand-tuned decay schedules. Minibatch 100, z of
    # 100 and k = 1 D update per G update (Algorithm 1) are the paper's, as are its generator's 1200-unit layers.
    p = common.arg_parser(__doc__, lr=2e-4, batch_size=100, d_steps=1)
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (DCGAN's 0.5)")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (PyTorch's default)")
    p.add_argument("--width", type=common.positive_int, default=1200, help="units in each hidden layer of G and D")
    return common.finish_args(p, argv, arch="vanilla_gan")


class Generator(nn.Module):
    """z (B, latent_dim) [+ y] -> image (B, channels, S, S) in [-1, 1]; S = 32 or 64.

    Two hidden layers of ReLU units, as the paper's MNIST generator (1200 each); a Tanh output, the sigmoid of the
    paper rescaled to the [-1, 1] range images are trained in. No BatchNorm: it came a year after the paper.
    PyTorch's default initialisation for both networks, not the authors' uniform ranges (0.05 in G, 0.005 in D).
    """

    def __init__(self, latent_dim, channels, image_size, n_classes=0, width=1200):
        super().__init__()
        self.n_classes, self.shape = n_classes, (channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim + n_classes, width), nn.ReLU(inplace=True),  # (B, width)
            nn.Linear(width, width), nn.ReLU(inplace=True),  # (B, width)
            nn.Linear(width, channels * image_size * image_size), nn.Tanh())  # (B, C*S*S)

    def forward(self, z, y=None):
        if self.n_classes:
            z = torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1)  # (B, latent_dim + n_classes)
        return self.net(z).view(-1, *self.shape)  # (B, C*S*S) -> (B, channels, S, S)


class Discriminator(nn.Module):
    """image (B, channels, S, S) [+ y] -> d (B,), a logit: D(x) = sigmoid(d(x)).

    The paper's D used maxout units (the max of 5 linear pieces) with dropout. Maxout is not a PyTorch layer;
    LeakyReLU(0.2) is max(a, 0.2 a), a two-piece maxout whose pieces share their weights: piecewise linear and
    never saturating like maxout, with one linear map per unit instead of five. Its 1200 units match the 1200
    linear pieces of the paper's 240 maxout units. Dropout as in the authors' mnist.yaml: 0.2 on D's input, 0.5 on
    its hidden units, which keeps D from memorising the training images.
    """

    def __init__(self, channels, image_size, n_classes=0, width=1200):
        super().__init__()
        self.n_classes = n_classes
        self.net = nn.Sequential(
            nn.Dropout(p=0.2), nn.Linear(channels * image_size * image_size + n_classes, width),
            nn.LeakyReLU(0.2, inplace=True),  # (B, width)
            nn.Dropout(p=0.5), nn.Linear(width, width), nn.LeakyReLU(0.2, inplace=True),  # (B, width)
            nn.Dropout(p=0.5), nn.Linear(width, 1))  # (B, 1)

    def forward(self, x, y=None):
        x = x.flatten(1)  # (B, C*S*S)
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
    G, D = run.parallel(G, D)  # torchrun: synchronised BatchNorm and DistributedDataParallel (parallel.py)
    for real, labels in run.batches():
        update_G = (run.step + 1) % args.d_steps == 0  # run.step batches are done: this is batch run.step + 1
        run.log(train_step(G, D, opt_G, opt_D, real, labels, args, update_G))


if __name__ == "__main__":
    common.cli(main)
