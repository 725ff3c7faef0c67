#!/usr/bin/python3
"""Writes the small ResNet parity fixtures under tests/fixtures/resnet/.

Run with Debian's torch (1.13) + torchvision:  /usr/bin/python3 tools/make_fixtures.py [outdir]

Each fixture is a narrow torchvision ResNet (BasicBlock) whose state_dict has
exactly torchvision's key layout (the stages are rebuilt with torchvision's own
ResNet._make_layer at a smaller width), random weights, non-trivial BatchNorm
statistics (running_mean ~ N(0, 0.2), running_var ~ U(0.5, 2), gamma ~ U(0.5, 1.5),
beta ~ N(0, 0.2)), evaluated in eval mode. Files per fixture <name>:
  <name>.pth           torch.save(state_dict) (zip format)
  <name>_input.f32     input batch, NCHW, raw little-endian float32
  <name>_logits.f32    expected logits, N x classes, raw little-endian float32
and fixtures.json describes them, one fixture per line:
  {"name": "...", "layers": [..], "widths": [..], "input": [N,3,H,W], "logits": [N,C]}
A fixture is rejected and redrawn (next seed) if any input's top-1 margin is below
1e-3 * max|logit|, so that a correct float32 implementation cannot flip top-1.
"""
import json
import os
import sys

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, ResNet

FIXTURES = [
    # name, layers, stem + stage widths, classes, input shape
    ("r18n", [2, 2, 2, 2], [4, 4, 8, 12, 16], 5, [2, 3, 32, 32]),
    ("r34n", [3, 4, 6, 3], [4, 4, 6, 8, 8], 7, [2, 3, 29, 29]),
]


def narrow_resnet(layers, widths, classes):
    """torchvision ResNet(BasicBlock) with its stem and stages rebuilt narrower."""
    m = ResNet(BasicBlock, layers, num_classes=classes)
    stem = widths[0]
    m.inplanes = stem
    m.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(stem)
    m.layer1 = m._make_layer(BasicBlock, widths[1], layers[0])
    m.layer2 = m._make_layer(BasicBlock, widths[2], layers[1], stride=2)
    m.layer3 = m._make_layer(BasicBlock, widths[3], layers[2], stride=2)
    m.layer4 = m._make_layer(BasicBlock, widths[4], layers[3], stride=2)
    m.fc = nn.Linear(widths[4], classes)
    return m


def randomize(m, gen):
    """Random conv/fc weights and non-trivial BatchNorm parameters and statistics."""
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
                mod.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
    m.eval()


def well_separated(logits):
    top2 = logits.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    return margin >= 1e-3 * logits.abs().max().item()


def write_f32(path, t):
    t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tofile(path)


def make(outdir, name, layers, widths, classes, shape):
    for seed in range(1, 100):
        gen = torch.Generator().manual_seed(1000 * seed + len(name))
        m = narrow_resnet(layers, widths, classes)
        randomize(m, gen)
        x = torch.randn(shape, generator=gen)
        with torch.no_grad():
            y = m(x)
        if well_separated(y):
            break
    else:
        sys.exit(f"{name}: could not draw a fixture with separated top-1")
    torch.save(m.state_dict(), os.path.join(outdir, name + ".pth"))
    write_f32(os.path.join(outdir, name + "_input.f32"), x)
    write_f32(os.path.join(outdir, name + "_logits.f32"), y)
    return {"name": name, "layers": layers, "widths": widths[1:], "stem": widths[0],
            "input": list(shape), "logits": list(y.shape)}


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "resnet")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    lines = [json.dumps(make(outdir, *f)) for f in FIXTURES]
    with open(os.path.join(outdir, "fixtures.json"), "w") as f:
        f.write("[\n" + ",\n".join(lines) + "\n]\n")
    total = sum(os.path.getsize(os.path.join(outdir, p)) for p in os.listdir(outdir))
    print(f"wrote {len(FIXTURES)} fixtures to {outdir} ({total} bytes)")


if __name__ == "__main__":
    main()
