#!/usr/bin/python3
"""Writes the small torch.save fixtures used by tests/test_weights.c.

Run with Debian's torch:  /usr/bin/python3 tools/make_weight_fixtures.py [OUTDIR]
(default OUTDIR tests/fixtures/weights). Deterministic (fixed seeds), but torch
may serialise byte-for-byte differently across versions; the tests only rely on
the values recorded in the *.json files written next to the .pth files.

Files:
  narrow_zip.pth / narrow_legacy.pth  state_dict of a narrow ResNet-18 layout
      (stem 4, widths 4/8/16/24, blocks 2/2/2/2, 5 classes) with random weights and
      non-trivial BatchNorm statistics, in torch's zip format and in the legacy
      (_use_new_zipfile_serialization=False) format. Same 122 keys as resnet18.
  narrow.json   key order, shapes, per-tensor sum / sum|x| / first values.
  dtypes_zip.pth / dtypes_legacy.pth / dtypes_deflate.pth  a training checkpoint
      dict {"epoch", "lr", ..., "state_dict": {...}} whose state_dict keys carry a
      "module." prefix and whose tensors cover float16/bfloat16/float64/int64/
      int32/int16/int8/uint8/bool, a 0-dim tensor, a transposed (non-contiguous)
      view, a strided slice with storage offset, two tensors sharing one storage
      and an nn.Parameter. dtypes_deflate.pth is dtypes_zip.pth re-packed with
      deflate compression (torch writes stored entries; other writers may not).
  dtypes.json   every tensor's shape and full values (as float32), key order.
"""
import collections
import json
import os
import sys
import zipfile

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock


class NarrowResNet(nn.Module):
    """torchvision ResNet key layout with configurable widths."""

    def __init__(self, stem, widths, layers, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, (w, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if stride != 1 or inplanes != w:
                    down = nn.Sequential(nn.Conv2d(inplanes, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                blocks.append(BasicBlock(inplanes, w, stride, down))
                inplanes = w
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)


def randomise_bn(model, g):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def describe(sd):
    out = []
    for k, v in sd.items():
        f = v.detach().to(torch.float64).flatten()
        out.append({"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""),
                    "sum": float(f.sum()), "abssum": float(f.abs().sum()),
                    "first": [float(x) for x in v.detach().to(torch.float32).flatten()[:4]]})
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/weights"
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)

    model = NarrowResNet(4, [4, 8, 16, 24], [2, 2, 2, 2], 5)
    randomise_bn(model, g)
    sd = model.state_dict()
    torch.save(sd, os.path.join(out, "narrow_zip.pth"))
    torch.save(sd, os.path.join(out, "narrow_legacy.pth"), _use_new_zipfile_serialization=False)
    with open(os.path.join(out, "narrow.json"), "w") as f:
        json.dump({"stem": 4, "widths": [4, 8, 16, 24], "layers": [2, 2, 2, 2], "num_classes": 5,
                   "tensors": describe(sd)}, f, indent=1)

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 0.5 - 3
    shared = torch.randn(10, generator=g)
    sd2 = collections.OrderedDict()
    sd2["module.f32"] = torch.randn(2, 3, generator=g)
    sd2["module.f16"] = torch.randn(3, 2, generator=g).half()
    sd2["module.bf16"] = torch.randn(5, generator=g).bfloat16()
    sd2["module.f64"] = torch.randn(2, 2, generator=g).double()
    sd2["module.i64"] = torch.tensor([0, -5, 123456789], dtype=torch.int64)
    sd2["module.i32"] = torch.tensor([[7, -8], [9, 10]], dtype=torch.int32)
    sd2["module.i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd2["module.i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd2["module.u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd2["module.bool"] = torch.tensor([True, False, True])
    sd2["module.scalar"] = torch.tensor(42)
    sd2["module.transposed"] = base.t()
    sd2["module.slice"] = base[1:, ::2]
    sd2["module.shared_a"] = shared[2:6]
    sd2["module.shared_b"] = shared.view(2, 5)
    sd2["module.param"] = nn.Parameter(torch.randn(3, generator=g))
    ckpt = {"epoch": 3, "lr": 0.1, "optimizer": "sgd", "nesterov": True, "note": None,
            "big": 2 ** 40, "neg": -7, "history": [1.5, 2.5], "pair": (1, "x"),
            "state_dict": sd2}
    zpath = os.path.join(out, "dtypes_zip.pth")
    torch.save(ckpt, zpath)
    torch.save(ckpt, os.path.join(out, "dtypes_legacy.pth"), _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(zpath) as zin, \
            zipfile.ZipFile(os.path.join(out, "dtypes_deflate.pth"), "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    with open(os.path.join(out, "dtypes.json"), "w") as f:
        json.dump({"tensors": [{"name": k[len("module."):], "shape": list(v.shape),
                                "values": [float(x) for x in v.detach().to(torch.float32).flatten()]}
                               for k, v in sd2.items()]}, f, indent=1)
    # self-check: torch reads its files back identically
    for name in ("narrow_zip.pth", "narrow_legacy.pth"):
        back = torch.load(os.path.join(out, name))
        assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


if __name__ == "__main__":
    main()
