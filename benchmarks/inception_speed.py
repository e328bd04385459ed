"""Images per second of the FID Inception pass (pytorch-fid's network, 28x28 grey input as for MNIST) for a few
settings: batch size, memory format (channels_last or not), threads. Also checks that every setting gives the same
features as the default one, to float rounding.

    python benchmarks/inception_speed.py          # the weights from torch.hub's cache ($TORCH_HOME/hub/checkpoints/)
"""
import argparse
import os
import time

import torch



def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=200, help="images per setting")
    args = p.parse_args()
    from pytorch_fid.inception import InceptionV3
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    x = torch.rand(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(0)).expand(-1, 3, -1, -1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    reference = None
    for threads in sorted({torch.get_num_threads(), os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        for fmt in (torch.contiguous_format, torch.channels_last):
            model = model.to(memory_format=fmt)
            for bs in (10, 25, 50, 100):
                with torch.no_grad():
                    model(x[:2].contiguous(memory_format=fmt))  # warm-up
                    t0 = time.time()
                    f = torch.cat([model(x[i:i + bs].contiguous(memory_format=fmt))[0].flatten(1)
                                   for i in range(0, len(x), bs)])
                    dt = time.time() - t0
                reference = f if reference is None else reference
                err = (f - reference).abs().max().item()
                name = "channels_last" if fmt == torch.channels_last else "contiguous"
                print(f"threads {threads}  {name:<13}  batch {bs:>3}: {len(x) / dt:6.1f} img/s   "
                      f"max |feature diff| vs first {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
