#!/usr/bin/python3
"""Learnability check of the synthetic dataset (`defectnet synth`) with the
reference stack: frozen ImageNet ResNet-18 features (torchvision, weights from
$DN_SHARED or ../shared) + a linear head trained with Adam on the first
--train images of each class, accuracy on the rest. Preprocessing is the eval
transform defectnet reproduces exactly.

usage: /usr/bin/python3 tools/synth_learnability.py DIR [--train 40] [--resize 256 --crop 224]
"""
import argparse
import collections
import os

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('root')
    ap.add_argument('--train', type=int, default=40)
    ap.add_argument('--resize', type=int, default=256)
    ap.add_argument('--crop', type=int, default=224)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    shared = os.environ.get('DN_SHARED') or os.path.join(os.path.dirname(__file__), '..', '..', 'shared')
    m = torchvision.models.resnet18()
    m.load_state_dict(torch.load(os.path.join(shared, 'weights', 'resnet18-imagenet.pth')))
    m.fc = torch.nn.Identity()
    m.eval()
    tf = T.Compose([T.Resize(a.resize), T.CenterCrop(a.crop), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    cls = sorted(d for d in os.listdir(a.root) if os.path.isdir(os.path.join(a.root, d)))
    X, Y, S = [], [], []
    with torch.no_grad():
        for ci, c in enumerate(cls):
            fs = sorted(os.listdir(os.path.join(a.root, c)))
            for i in range(0, len(fs), 30):
                x = torch.stack([tf(Image.open(os.path.join(a.root, c, f)).convert('RGB')) for f in fs[i:i + 30]])
                X.append(m(x))
            Y += [ci] * len(fs)
            S += [i < a.train for i in range(len(fs))]
    X, Y, S = torch.cat(X), torch.tensor(Y), torch.tensor(S)
    X = (X - X[S].mean(0)) / (X[S].std(0) + 1e-6)
    head = torch.nn.Linear(X.shape[1], len(cls))
    opt = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(X[S]), Y[S]).backward()
        opt.step()
    pred = head(X[~S]).argmax(1)
    ok = int((pred == Y[~S]).sum())
    print('head-only on frozen ImageNet ResNet-18 features (%d/%d): test accuracy %.3f (%d/%d), %d train/class'
          % (a.resize, a.crop, ok / int((~S).sum()), ok, int((~S).sum()), a.train))
    errs = collections.Counter((cls[t], cls[p]) for t, p in zip(Y[~S].tolist(), pred.tolist()) if t != p)
    for (t, p), n in errs.most_common():
        print('  %s -> %s: %d' % (t, p, n))


if __name__ == '__main__':
    main()
