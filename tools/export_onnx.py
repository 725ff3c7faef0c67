#!/usr/bin/python3
"""Export torchvision ResNet-18 with the given weights to ONNX (torch.onnx, dynamic
batch) and write the shared benchmark input: a raw little-endian float32 tensor of
shape [batch, 3, 224, 224] (seeded normal noise) that every benchmarked system reads.

Usage: /usr/bin/python3 tools/export_onnx.py --weights ../shared/weights/resnet18-imagenet.pth \
           --out bench/out/resnet18.onnx --input bench/out/input.f32 [--batch 32]
"""
import argparse
import sys

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sd = torch.load(a.weights, map_location="cpu")
    n_cls = sd["fc.weight"].shape[0] if "fc.weight" in sd else 1000
    m = torchvision.models.resnet18(num_classes=n_cls)
    m.load_state_dict(sd, strict=True)
    m.eval()
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn(a.batch, 3, 224, 224, generator=g)
    x.numpy().astype("<f4").tofile(a.input)
    with torch.no_grad():
        torch.onnx.export(m, x[:1], a.out, opset_version=13, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True)
    print(f"export_onnx: wrote {a.out} and {a.input} ({a.batch}x3x224x224)", file=sys.stderr)


if __name__ == "__main__":
    main()
