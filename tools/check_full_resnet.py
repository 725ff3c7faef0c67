#!/usr/bin/python3
"""Full-width ResNet-18 parity data, generated at test time (too big to commit).

Run with Debian's torch (1.13) + torchvision:
  /usr/bin/python3 tools/check_full_resnet.py random OUTDIR [N]
      torchvision resnet18 (1000 classes) with random weights and non-trivial
      BatchNorm statistics -> OUTDIR/model.pth, an N x 3 x 224 x 224 N(0,1) input
      batch and its eval-mode logits.
  /usr/bin/python3 tools/check_full_resnet.py images OUTDIR WEIGHTS.pth IMAGE...
      torchvision resnet18 with the given state_dict; every image goes through
      torchvision's eval transform (PIL open -> RGB, Resize(256), CenterCrop(224),
      ToTensor, Normalize(ImageNet mean/std)) -> the preprocessed input batch and
      its logits.
Both write OUTDIR/input.f32 (N x 3 x 224 x 224) and OUTDIR/logits.f32 (N x classes)
as raw little-endian float32, and OUTDIR/shape.txt: "N 3 224 224 CLASSES".
"""
import os
import sys

import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from torchvision.models import resnet18


def randomize(m, gen):
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                mod.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                mod.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                mod.num_batches_tracked.fill_(100)
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * mod.in_features ** -0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)


def write(outdir, x, y):
    x.contiguous().numpy().astype("<f4").tofile(os.path.join(outdir, "input.f32"))
    y.contiguous().numpy().astype("<f4").tofile(os.path.join(outdir, "logits.f32"))
    with open(os.path.join(outdir, "shape.txt"), "w") as f:
        f.write("%d %d %d %d %d\n" % (*x.shape, y.shape[1]))


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("random", "images"):
        sys.exit(__doc__)
    mode, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    m = resnet18()
    if mode == "random":
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 2
        gen = torch.Generator().manual_seed(2024)
        randomize(m, gen)
        torch.save(m.state_dict(), os.path.join(outdir, "model.pth"))
        x = torch.randn((n, 3, 224, 224), generator=gen)
    else:
        m.load_state_dict(torch.load(sys.argv[3], map_location="cpu"))
        tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in sys.argv[4:]])
    m.eval()
    with torch.no_grad():
        y = m(x)
    write(outdir, x, y)


if __name__ == "__main__":
    main()
