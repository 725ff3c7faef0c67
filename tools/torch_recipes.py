#!/usr/bin/python3
"""Reference fine-tuning recipes in PyTorch (Debian python3-torch 1.13 + torchvision),
run on the SAME split manifests as `defectnet train`, so results are comparable.

Run with /usr/bin/python3 (the python3 first on PATH lacks torch).

Subcommands
  split    write a stratified split manifest (CSV header `path,label,split`, paths
           relative to the manifest's folder, classes in natural order):
             split --data DIR --out split.csv [--val 0.15 --test 0.15 --seed 0]
                   [--group-block N]   keep runs of N consecutively numbered files of a
                                       class together (NEU-CLS-64: neighbouring numbers are
                                       neighbouring tiles of one source strip, so a random
                                       split would leak near-duplicate texture)
           A folder with train/ and test/ sub-folders keeps that official split and carves
           val out of train.
  cut      an imbalanced cut of a split manifest (issue 10: data shaped like a line):
             cut --manifest split.csv --out cut.csv --mode imb10 --cls Cr
                   imb10:  CLS keeps all its rows, every other class keeps 1/10 of its rows
                           in each part (one class 10x the others)
                   rare20: CLS keeps 20 images (14 train / 3 val / 3 test; with --keep-test
                           its whole test part), the others everything
  train    run one recipe on a split manifest and print one JSON line with test metrics:
             train --manifest split.csv --recipe head|layer4|scratch --weights PTH
                   [--epochs --lr --batch --image-size --optimizer sgd|adamw --views K ...]
           recipe head:    frozen backbone (eval mode), new nn.Linear head. With --views K
                           (default) the features of the original + K augmented views are
                           computed ONCE and the head is trained on that cache (what
                           defectnet does); --tutorial re-runs the backbone on freshly
                           augmented images every epoch (the PyTorch transfer-learning
                           tutorial way).
           recipe layer4:  layer4 + fc trainable (BatchNorm of layer4 in train mode),
                           backbone lr x --backbone-lr-mult; like defectnet, trained on cached
                           layer3 outputs of the originals + K fixed augmented views
                           (--stream: freshly augmented images every epoch instead).
           recipe scratch: random init, everything trainable (keep it short on 2 cores).
           recipe staged:  --stages head:E,layer3:E2 of defectnet: one layer3 cache of the fixed
                           views; head on pooled features (frozen layer4), then layer4 + fc
                           for --epochs2 epochs from the best head; reports both test results.
  bench-head  time one head-only epoch the tutorial way (backbone forward every epoch,
           batch 32) vs on cached features, same images, and print both.

Augmentations match src/train/augment.h: RandomResizedCrop(scale=(0.5,1)), h/v flips,
90-degree rotations, brightness/contrast jitter 0.2. Preprocessing matches defectnet's
training default: Resize(S) + CenterCrop(S) + ImageNet normalisation, RGB.
"""
import argparse
import csv
import json
import math
import os
import random
import re
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.pgm', '.ppm')


def natural_key(s):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', s)]


# ------------------------------------------------------------------ split
def list_class_dir(root):
    classes = sorted([d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))], key=natural_key)
    items = []
    for c in classes:
        for f in sorted(os.listdir(os.path.join(root, c)), key=natural_key):
            if f.lower().endswith(EXTS):
                items.append((os.path.join(root, c, f), c))
    return classes, items


def stratified(items, fracs, rng, block):
    """items: [(path, label)]; fracs: {'val': v, 'test': t}; returns {path: split}."""
    by_label = {}
    for p, l in items:
        by_label.setdefault(l, []).append(p)
    out = {}
    for l, paths in by_label.items():
        if block > 0:
            groups = {}
            for p in paths:
                m = re.search(r'(\d+)', os.path.basename(p))
                g = int(m.group(1)) // block if m else 0
                groups.setdefault(g, []).append(p)
            units = [groups[g] for g in sorted(groups)]
        else:
            units = [[p] for p in paths]
        rng.shuffle(units)
        n = sum(len(u) for u in units)
        want = {k: round(v * n) for k, v in fracs.items()}
        got = {k: 0 for k in fracs}
        for u in units:
            dest = 'train'
            for k in fracs:  # fill test, then val, then the rest is train
                if got[k] < want[k]:
                    dest = k
                    break
            if dest != 'train':
                got[dest] += len(u)
            for p in u:
                out[p] = dest
    return out


def cmd_split(a):
    root = a.data.rstrip('/')
    official = os.path.isdir(os.path.join(root, 'train')) and os.path.isdir(os.path.join(root, 'test'))
    rng = random.Random(a.seed)
    rows = []
    if official:
        _, tr = list_class_dir(os.path.join(root, 'train'))
        _, te = list_class_dir(os.path.join(root, 'test'))
        sp = stratified(tr, {'val': a.val}, rng, a.group_block)
        rows = [(p, l, sp[p]) for p, l in tr] + [(p, l, 'test') for p, l in te]
    else:
        _, items = list_class_dir(root)
        sp = stratified(items, {'test': a.test, 'val': a.val}, rng, a.group_block)
        rows = [(p, l, sp[p]) for p, l in items]
    base = os.path.dirname(os.path.abspath(a.out))
    with open(a.out, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'label', 'split'])
        for p, l, s in rows:
            w.writerow([os.path.relpath(os.path.abspath(p), base), l, s])
    counts = {}
    for _, l, s in rows:
        counts[s] = counts.get(s, 0) + 1
    print(json.dumps({'manifest': a.out, 'official_split': official, 'counts': counts}))


def cmd_cut(a):
    base_in = os.path.dirname(os.path.abspath(a.manifest))
    base_out = os.path.dirname(os.path.abspath(a.out))
    rng = random.Random(a.seed)
    by = {}
    with open(a.manifest, newline='') as f:
        for r in csv.DictReader(f):
            by.setdefault((r['label'], r['split']), []).append(r)
    if a.cls not in {l for l, _ in by}:
        sys.exit('cut: class %r is not in %s' % (a.cls, a.manifest))
    keep = []
    for (l, s), rs in sorted(by.items()):
        rng.shuffle(rs)
        if a.mode == 'imb10':
            n = len(rs) if l == a.cls else max(1, round(len(rs) / 10))
        else:
            n = {'train': 14, 'val': 3, 'test': 3}.get(s, len(rs)) if l == a.cls else len(rs)
            if l == a.cls and s == 'test' and a.keep_test:
                n = len(rs)
        keep += rs[:n]
    counts = {}
    with open(a.out, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'label', 'split'])
        for r in keep:
            p = r['path'] if os.path.isabs(r['path']) else os.path.join(base_in, r['path'])
            w.writerow([os.path.relpath(p, base_out), r['label'], r['split']])
            counts['%s/%s' % (r['label'], r['split'])] = counts.get('%s/%s' % (r['label'], r['split']), 0) + 1
    print(json.dumps({'manifest': a.out, 'counts': counts}))


# ------------------------------------------------------------------ data
def read_manifest(path):
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, newline='') as f:
        for r in csv.DictReader(f):
            p = r['path']
            rows.append((p if os.path.isabs(p) else os.path.join(base, p), r['label'], r.get('split', 'train')))
    classes = sorted({l for _, l, _ in rows}, key=natural_key)
    idx = {c: i for i, c in enumerate(classes)}
    splits = {}
    for p, l, s in rows:
        splits.setdefault(s, []).append((p, idx[l]))
    return classes, splits


class Rot90:
    def __call__(self, img):
        k = random.randrange(4)
        return img.rotate(90 * k, expand=True) if k else img


def make_tf(size, aug, rrc=True):
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if not aug:
        return T.Compose([T.Resize(size), T.CenterCrop(size)] + norm)
    geo = [T.RandomResizedCrop(size, scale=(0.5, 1.0))] if rrc else [T.Resize(size), T.CenterCrop(size)]
    return T.Compose(geo + [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), Rot90(),
                            T.ColorJitter(brightness=0.2, contrast=0.2)] + norm)


class DS(torch.utils.data.Dataset):
    def __init__(self, items, tf):
        self.items, self.tf = items, tf
        self.cache = {}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        p, y = self.items[i]
        img = self.cache.get(p)
        if img is None:
            img = Image.open(p).convert('RGB')
            img.load()
            self.cache[p] = img
        return self.tf(img), y


def backbone(weights, n_classes):
    m = torchvision.models.resnet18()
    if weights:
        sd = torch.load(weights, map_location='cpu')
        m.load_state_dict(sd)
    m.fc = nn.Linear(m.fc.in_features, n_classes)
    return m


def features(m, loader):
    fs, ys = [], []
    body = nn.Sequential(*list(m.children())[:-1])
    body.eval()
    with torch.no_grad():
        for x, y in loader:
            fs.append(torch.flatten(body(x), 1))
            ys.append(y)
    return torch.cat(fs), torch.cat(ys)


def macro_f1(pred, y, k):
    f1s = []
    for c in range(k):
        tp = ((pred == c) & (y == c)).sum().item()
        npred = (pred == c).sum().item()
        nsup = (y == c).sum().item()
        if npred == 0 and nsup == 0:
            continue
        p = tp / npred if npred else 0.0
        r = tp / nsup if nsup else 0.0
        f1s.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return sum(f1s) / max(1, len(f1s))


def evaluate_logits(logits, y, k):
    pred = logits.argmax(1)
    return (pred == y).float().mean().item(), macro_f1(pred, y, k)


def make_opt(params, a, head_params=None):
    if a.optimizer == 'adamw':
        return torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
    return torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=a.weight_decay)


def lr_at(a, step, total):
    if a.warmup and step < a.warmup:
        return a.lr * (1 / 3 + (1 - 1 / 3) * step / a.warmup)
    t = min(step - a.warmup, total - a.warmup)
    return 0.5 * a.lr * (1 + math.cos(math.pi * t / max(1, total - a.warmup)))


def set_lr(opt, lr):
    for g in opt.param_groups:
        g['lr'] = lr * g.get('mult', 1.0)


def layer3_cache(m, mk, a, eval_tf, train_items, *eval_sets):
    """defectnet's layer3 cache: outputs of the frozen stem..layer3 for the training originals
    followed by a.views fixed augmented views of them, then for each eval set (eval transform).
    Returns [(X, Y) train, (X, Y) per eval set], computed in that order (RNG order kept)."""
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3).eval()

    def l3(items, tf):
        outs, ys = [], []
        with torch.no_grad():
            for x, y in mk(items, tf, False):
                outs.append(stem(x)); ys.append(y)
        return torch.cat(outs), torch.cat(ys)
    parts = [l3(train_items, eval_tf)]
    aug = make_tf(a.image_size, True)
    parts += [l3(train_items, aug) for _ in range(a.views)]
    train = (torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
    del parts
    return [train] + [l3(items, eval_tf) for items in eval_sets]


def cmd_train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    classes, sp = read_manifest(a.manifest)
    k = len(classes)
    t0 = time.time()
    m = backbone(a.weights if a.recipe != 'scratch' else None, k)
    weight = None
    if a.class_weights == 'auto':  # defectnet's --class-weights auto: n / (present classes * count_c)
        cnt = [0] * k
        for _, y in sp['train']:
            cnt[y] += 1
        present = sum(1 for c in cnt if c)
        weight = torch.tensor([len(sp['train']) / (present * c) if c else 0.0 for c in cnt])
    crit = nn.CrossEntropyLoss(weight=weight, label_smoothing=a.label_smoothing)
    eval_tf = make_tf(a.image_size, False)
    mk = lambda items, tf, sh: torch.utils.data.DataLoader(DS(items, tf), batch_size=a.batch, shuffle=sh)
    val_items, test_items, train_items = sp.get('val', []), sp['test'], sp['train']
    best = (-1, None, -1)
    log = []
    if a.recipe == 'head' and not a.tutorial:
        # features once: originals + K augmented views
        tf0 = time.time()
        Xs, Ys = [], []
        X, Y = features(m, mk(train_items, eval_tf, False))
        Xs.append(X); Ys.append(Y)
        aug = make_tf(a.image_size, True)
        for v in range(a.views):
            X, Y = features(m, mk(train_items, aug, False))
            Xs.append(X); Ys.append(Y)
        Xtr, Ytr = torch.cat(Xs), torch.cat(Ys)
        Xva, Yva = features(m, mk(val_items, eval_tf, False)) if val_items else (None, None)
        Xte, Yte = features(m, mk(test_items, eval_tf, False))
        feat_time = time.time() - tf0
        head = m.fc
        opt = make_opt(head.parameters(), a)
        steps_per = math.ceil(len(Xtr) / a.batch)
        total = a.epochs * steps_per
        step = 0
        th0 = time.time()
        for ep in range(a.epochs):
            perm = torch.randperm(len(Xtr))
            for i in range(0, len(Xtr), a.batch):
                idx = perm[i:i + a.batch]
                set_lr(opt, lr_at(a, step, total))
                loss = crit(head(Xtr[idx]), Ytr[idx])
                opt.zero_grad(); loss.backward(); opt.step(); step += 1
            if Xva is not None:
                with torch.no_grad():
                    acc, f1 = evaluate_logits(head(Xva), Yva, k)
                log.append((ep, round(acc, 4), round(f1, 4)))
                if f1 > best[0]:
                    best = (f1, {kk: v.clone() for kk, v in head.state_dict().items()}, ep)
        head_time = time.time() - th0
        if best[1] is not None:
            head.load_state_dict(best[1])
        with torch.no_grad():
            acc, f1 = evaluate_logits(head(Xte), Yte, k)
        extra = {'feature_s': round(feat_time, 1), 'head_train_s': round(head_time, 3),
                 'cached_samples': len(Xtr)}
    elif a.recipe == 'staged':
        # defectnet --stages head:E1,layer3:E2 with the default caches: layer3 outputs of the
        # originals + K fixed views computed once; stage 1 trains fc on pooled features obtained by
        # the frozen pretrained layer4 from that cache, stage 2 trains layer4 + fc from the best head.
        tf0 = time.time()
        (Xtr, Ytr), (Xva, Yva), (Xte, Yte) = layer3_cache(m, mk, a, eval_tf, train_items, val_items, test_items)
        feat_time = time.time() - tf0
        body4 = nn.Sequential(m.layer4, m.avgpool, nn.Flatten())

        def pooled(X):
            body4.eval()
            with torch.no_grad():
                return torch.cat([body4(X[i:i + 256]) for i in range(0, len(X), 256)])
        Ftr, Fva, Fte = pooled(Xtr), pooled(Xva), pooled(Xte)
        head = m.fc
        opt = make_opt(head.parameters(), a)
        steps_per = math.ceil(len(Ftr) / a.batch)
        total, step = a.epochs * steps_per, 0
        bad = 0
        for ep in range(a.epochs):
            perm = torch.randperm(len(Ftr))
            for i in range(0, len(Ftr), a.batch):
                idx = perm[i:i + a.batch]
                set_lr(opt, lr_at(a, step, total))
                loss = crit(head(Ftr[idx]), Ytr[idx])
                opt.zero_grad(); loss.backward(); opt.step(); step += 1
            with torch.no_grad():
                acc, f1 = evaluate_logits(head(Fva), Yva, k)
            log.append(('head', ep, round(acc, 4), round(f1, 4)))
            if f1 > best[0]:
                best = (f1, {kk: v.clone() for kk, v in head.state_dict().items()}, ep); bad = 0
            else:
                bad += 1
                if a.patience and bad >= a.patience:
                    break
        head.load_state_dict(best[1])
        with torch.no_grad():
            hacc, hf1 = evaluate_logits(head(Fte), Yte, k)
        head_epoch = best[2]
        best = (best[0], {kk: v.clone() for kk, v in m.state_dict().items()}, best[2])
        top = nn.Sequential(m.layer4, m.avgpool, nn.Flatten(), m.fc)
        groups = [{'params': list(m.layer4.parameters()), 'mult': a.backbone_lr_mult},
                  {'params': list(m.fc.parameters()), 'mult': 1.0}]
        opt = make_opt(groups, a)
        steps_per = math.ceil(len(Xtr) / a.batch)
        total, step = a.epochs2 * steps_per, 0
        th0 = time.time()
        for ep in range(a.epochs2):
            top.train()
            perm = torch.randperm(len(Xtr))
            te0 = time.time()
            for i in range(0, len(Xtr), a.batch):
                idx = perm[i:i + a.batch]
                set_lr(opt, lr_at(a, step, total))
                loss = crit(top(Xtr[idx]), Ytr[idx])
                opt.zero_grad(); loss.backward(); opt.step(); step += 1
            top.eval()
            with torch.no_grad():
                L = torch.cat([top(Xva[i:i + 256]) for i in range(0, len(Xva), 256)])
            acc, f1 = evaluate_logits(L, Yva, k)
            log.append(('layer4', ep, round(acc, 4), round(f1, 4), round(time.time() - te0, 1)))
            print(json.dumps({'epoch': ep, 'val_acc': acc, 'val_f1': f1, 'epoch_s': round(time.time() - te0, 1)}),
                  file=sys.stderr, flush=True)
            if f1 > best[0]:
                best = (f1, {kk: v.clone() for kk, v in m.state_dict().items()}, a.epochs + ep)
        m.load_state_dict(best[1])
        top.eval()
        with torch.no_grad():
            L = torch.cat([top(Xte[i:i + 256]) for i in range(0, len(Xte), 256)])
        acc, f1 = evaluate_logits(L, Yte, k)
        extra = {'feature_s': round(feat_time, 1), 'layer4_train_s': round(time.time() - th0, 1),
                 'head_stage_test_acc': round(hacc, 4), 'head_stage_test_macro_f1': round(hf1, 4),
                 'head_stage_best_epoch': head_epoch, 'epochs2': a.epochs2}
    elif a.recipe == 'layer4' and not a.stream:
        # what defectnet does by default: layer3 outputs of the originals + K fixed
        # augmented views computed once, layer4 + fc trained on them
        tf0 = time.time()
        (Xtr, Ytr), (Xva, Yva) = layer3_cache(m, mk, a, eval_tf, train_items, val_items)
        feat_time = time.time() - tf0
        top = nn.Sequential(m.layer4, m.avgpool, nn.Flatten(), m.fc)
        groups = [{'params': list(m.layer4.parameters()), 'mult': a.backbone_lr_mult},
                  {'params': list(m.fc.parameters()), 'mult': 1.0}]
        opt = make_opt(groups, a)
        steps_per = math.ceil(len(Xtr) / a.batch)
        total = a.epochs * steps_per
        step = 0
        th0 = time.time()
        for ep in range(a.epochs):
            top.train()
            perm = torch.randperm(len(Xtr))
            te0 = time.time()
            for i in range(0, len(Xtr), a.batch):
                idx = perm[i:i + a.batch]
                set_lr(opt, lr_at(a, step, total))
                loss = crit(top(Xtr[idx]), Ytr[idx])
                opt.zero_grad(); loss.backward(); opt.step(); step += 1
            top.eval()
            with torch.no_grad():
                L = torch.cat([top(Xva[i:i + 64]) for i in range(0, len(Xva), 64)])
            acc, f1 = evaluate_logits(L, Yva, k)
            log.append((ep, round(acc, 4), round(f1, 4), round(time.time() - te0, 1)))
            print(json.dumps({'epoch': ep, 'loss': round(loss.item(), 4), 'val_acc': acc, 'val_f1': f1,
                              'epoch_s': round(time.time() - te0, 1)}), file=sys.stderr, flush=True)
            if f1 > best[0]:
                best = (f1, {kk: v.clone() for kk, v in m.state_dict().items()}, ep)
        head_time = time.time() - th0
        del Xtr
        if best[1] is not None:
            m.load_state_dict(best[1])
        m.eval()
        with torch.no_grad():
            L = torch.cat([m(x) for x, _ in mk(test_items, eval_tf, False)])
        acc, f1 = evaluate_logits(L, torch.tensor([y for _, y in test_items]), k)
        extra = {'feature_s': round(feat_time, 1), 'top_train_s': round(head_time, 1), 'cached_samples': steps_per * a.batch}
    else:
        if a.recipe == 'head':
            for n_, p in m.named_parameters():
                p.requires_grad = n_.startswith('fc.')
            groups = [{'params': list(m.fc.parameters()), 'mult': 1.0}]
        elif a.recipe == 'layer4':
            for n_, p in m.named_parameters():
                p.requires_grad = n_.startswith('fc.') or n_.startswith('layer4.')
            groups = [{'params': list(m.layer4.parameters()), 'mult': a.backbone_lr_mult},
                      {'params': list(m.fc.parameters()), 'mult': 1.0}]
        else:
            groups = [{'params': list(m.parameters()), 'mult': 1.0}]
        opt = make_opt(groups, a)
        train_loader = mk(train_items, make_tf(a.image_size, not a.no_aug), True)
        val_loader = mk(val_items, eval_tf, False) if val_items else None
        total = a.epochs * len(train_loader)
        step = 0
        for ep in range(a.epochs):
            m.train()
            if a.recipe == 'head':
                m.eval()
            elif a.recipe == 'layer4':
                m.eval(); m.layer4.train()
            te0 = time.time()
            for x, y in train_loader:
                set_lr(opt, lr_at(a, step, total))
                loss = crit(m(x), y)
                opt.zero_grad(); loss.backward(); opt.step(); step += 1
            ep_s = time.time() - te0
            if val_loader:
                m.eval()
                with torch.no_grad():
                    L = torch.cat([m(x) for x, _ in val_loader])
                    Yv = torch.tensor([y for _, y in val_items])
                acc, f1 = evaluate_logits(L, Yv, k)
                log.append((ep, round(acc, 4), round(f1, 4), round(ep_s, 1)))
                print(json.dumps({'epoch': ep, 'loss': round(loss.item(), 4), 'val_acc': acc, 'val_f1': f1,
                                  'epoch_s': round(ep_s, 1)}), file=sys.stderr, flush=True)
                if f1 > best[0]:
                    best = (f1, {kk: v.clone() for kk, v in m.state_dict().items()}, ep)
        if best[1] is not None:
            m.load_state_dict(best[1])
        m.eval()
        with torch.no_grad():
            L = torch.cat([m(x) for x, _ in mk(test_items, eval_tf, False)])
        acc, f1 = evaluate_logits(L, torch.tensor([y for _, y in test_items]), k)
        extra = {}
    res = {'system': 'pytorch', 'manifest': a.manifest, 'recipe': a.recipe, 'tutorial': a.tutorial,
           'epochs': a.epochs, 'lr': a.lr, 'optimizer': a.optimizer, 'batch': a.batch,
           'image_size': a.image_size, 'views': a.views if a.recipe != 'scratch' else None,
           'label_smoothing': a.label_smoothing, 'class_weights': a.class_weights, 'threads': a.threads,
           'train': len(train_items), 'val': len(val_items), 'test': len(test_items),
           'best_epoch': best[2], 'test_acc': round(acc, 4), 'test_macro_f1': round(f1, 4),
           'wall_s': round(time.time() - t0, 1), 'val_log': log}
    res.update(extra)
    print(json.dumps(res), flush=True)


def cmd_bench_head(a):
    """One head-only epoch: tutorial way (backbone forward on every batch) vs cached features."""
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    classes, sp = read_manifest(a.manifest)
    items = sp['train'][:a.limit] if a.limit else sp['train']
    m = backbone(a.weights, len(classes))
    for n_, p in m.named_parameters():
        p.requires_grad = n_.startswith('fc.')
    m.eval()
    opt = torch.optim.SGD(m.fc.parameters(), lr=0.01, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(DS(items, make_tf(a.image_size, True)), batch_size=32, shuffle=True)
    for x, y in loader:  # warm the image cache (decode) so only the compute is timed
        break
    [DS.__getitem__(loader.dataset, i) for i in range(len(items))]
    t0 = time.time()
    for x, y in loader:
        loss = crit(m(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    tut = time.time() - t0
    X, Y = features(m, torch.utils.data.DataLoader(DS(items, make_tf(a.image_size, False)), batch_size=32))
    t0 = time.time()
    reps = 20
    for _ in range(reps):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 32):
            idx = perm[i:i + 32]
            loss = crit(m.fc(X[idx]), Y[idx])
            opt.zero_grad(); loss.backward(); opt.step()
    cached = (time.time() - t0) / reps
    print(json.dumps({'images': len(items), 'image_size': a.image_size, 'threads': a.threads,
                      'tutorial_epoch_s': round(tut, 3), 'pytorch_cached_epoch_s': round(cached, 5)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('split')
    s.add_argument('--data', required=True)
    s.add_argument('--out', required=True)
    s.add_argument('--val', type=float, default=0.15)
    s.add_argument('--test', type=float, default=0.15)
    s.add_argument('--seed', type=int, default=0)
    s.add_argument('--group-block', type=int, default=0)
    c = sub.add_parser('cut')
    c.add_argument('--manifest', required=True)
    c.add_argument('--out', required=True)
    c.add_argument('--mode', choices=['imb10', 'rare20'], required=True)
    c.add_argument('--cls', required=True)
    c.add_argument('--keep-test', action='store_true')
    c.add_argument('--seed', type=int, default=7)
    t = sub.add_parser('train')
    t.add_argument('--manifest', required=True)
    t.add_argument('--recipe', choices=['head', 'layer4', 'scratch', 'staged'], default='head')
    t.add_argument('--epochs2', type=int, default=5, help='staged: layer4 epochs')
    t.add_argument('--patience', type=int, default=10)
    t.add_argument('--weights', default=None)
    t.add_argument('--tutorial', action='store_true')
    t.add_argument('--stream', action='store_true', help='layer4: fresh augmentations every epoch (no layer3 cache)')
    t.add_argument('--views', type=int, default=4)
    t.add_argument('--epochs', type=int, default=30)
    t.add_argument('--lr', type=float, default=1e-3)
    t.add_argument('--weight-decay', type=float, default=1e-4)
    t.add_argument('--backbone-lr-mult', type=float, default=0.1)
    t.add_argument('--optimizer', choices=['sgd', 'adamw'], default='adamw')
    t.add_argument('--warmup', type=int, default=0)
    t.add_argument('--batch', type=int, default=32)
    t.add_argument('--image-size', type=int, default=224)
    t.add_argument('--label-smoothing', type=float, default=0.1)
    t.add_argument('--class-weights', choices=['none', 'auto'], default='none',
                   help='auto: class-balanced loss weights as defectnet --class-weights auto')
    t.add_argument('--no-aug', action='store_true')
    t.add_argument('--threads', type=int, default=2)
    t.add_argument('--seed', type=int, default=0)
    b = sub.add_parser('bench-head')
    b.add_argument('--manifest', required=True)
    b.add_argument('--weights', required=True)
    b.add_argument('--image-size', type=int, default=224)
    b.add_argument('--threads', type=int, default=2)
    b.add_argument('--limit', type=int, default=0)
    a = ap.parse_args()
    {'split': cmd_split, 'cut': cmd_cut, 'train': cmd_train, 'bench-head': cmd_bench_head}[a.cmd](a)


if __name__ == '__main__':
    main()
