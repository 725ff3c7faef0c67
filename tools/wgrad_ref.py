#!/usr/bin/python3
"""PyTorch reference for convolution weight gradients (tests/test_train_kernels.c).

Reads x [n][cin][h][w] and dy [n][cout][oh][ow] as little-endian float32 files,
writes dW [cout][cin][k][k] = torch.nn.grad.conv2d_weight(x, ..., dy) (float32,
PyTorch's CPU convolution backward) to the output file.
Usage: /usr/bin/python3 tools/wgrad_ref.py X DY OUT n cin cout h w k stride pad
"""
import sys

import numpy as np
import torch


def main():
    if len(sys.argv) != 12:
        sys.exit("usage: wgrad_ref.py X DY OUT n cin cout h w k stride pad")
    xp, dyp, outp = sys.argv[1:4]
    n, cin, cout, h, w, k, s, p = (int(v) for v in sys.argv[4:12])
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    x = torch.from_numpy(np.fromfile(xp, dtype="<f4").reshape(n, cin, h, w))
    dy = torch.from_numpy(np.fromfile(dyp, dtype="<f4").reshape(n, cout, oh, ow))
    torch.set_num_threads(1)
    dw = torch.nn.grad.conv2d_weight(x, (cout, cin, k, k), dy, stride=s, padding=p)
    dw.numpy().astype("<f4").tofile(outp)


if __name__ == "__main__":
    main()
