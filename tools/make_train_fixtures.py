#!/usr/bin/python3
"""Training-parity fixtures for tests/test_train_parity.c (PyTorch 1.13).

A narrow ResNet with torchvision's exact key layout (torchvision BasicBlock,
layers [2,2,2,2], stem width 4, stage widths 4/4/8/8, 3 classes), random
weights and non-trivial BatchNorm state, a fixed batch of 4 images 3x36x36 and
labels. For each case it runs 5 optimizer steps on that batch and records every
parameter and BatchNorm buffer that changed, after step 1 and after step 5, the
loss of every step, and (case sgd_none) the gradients of the first backward.

Frozen stages are put in eval() mode (running stats untouched) and get
requires_grad=False, which is defectnet's freezing contract.

Output in tests/fixtures/train/:
  init.pth         : the initial state_dict, written by torch.save (zip format) and
                     read by defectnet's own .pth reader in the test
and little-endian float32 blobs + a JSON index each:
  common.bin/.json : "x" [4,3,36,36], "labels" [4], and "schedules" (lr tables)
  <case>.bin/.json : "step1/<name>", "step5/<name>", ("grad0/<name>"), "loss" [5]
                     and "config" in the JSON describing the case.
Usage: /usr/bin/python3 tools/make_train_fixtures.py [outdir]
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock

STEM, WIDTHS, LAYERS, CLASSES = 4, (4, 4, 8, 8), (2, 2, 2, 2), 3
BATCH, SIZE = 4, 36


class NarrowResNet(nn.Module):
    """torchvision.models.ResNet's structure and key names with custom widths."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = STEM
        for i, (w, n) in enumerate(zip(WIDTHS, LAYERS)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if stride != 1 or cin != w:
                    down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                blocks.append(BasicBlock(cin, w, stride, down))
                cin = w
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, CLASSES)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, "layer%d" % i)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make_model(seed):
    torch.manual_seed(seed)
    m = NarrowResNet()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.uniform_(0.6, 1.4)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(7)
    return m


STAGES = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]


def stage_of(name):
    top = name.split(".")[0]
    return {"conv1": 0, "bn1": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4, "fc": 5}[top]


def apply_freeze(m, first):
    """Stages < first: eval() + requires_grad False. Returns the trainable named params."""
    m.train()
    for name, mod in m.named_children():
        if name in ("relu", "maxpool", "avgpool"):
            continue
        if stage_of(name) < first:
            mod.eval()
            for p in mod.parameters():
                p.requires_grad_(False)
    return [(n, p) for n, p in m.named_parameters() if p.requires_grad]


class Blob:
    def __init__(self):
        self.index, self.data = [], []
        self.offset = 0

    def add(self, name, t):
        a = t.detach().to(torch.float32).reshape(-1).clone()  # snapshot: state_dict shares storage
        self.index.append({"name": name, "shape": list(t.shape), "offset": self.offset})
        self.data.append(a)
        self.offset += a.numel()

    def write(self, path, extra=None):
        buf = torch.cat(self.data).numpy().astype("<f4").tobytes() if self.data else b""
        with open(path + ".bin", "wb") as f:
            f.write(buf)
        meta = {"tensors": self.index}
        if extra:
            meta.update(extra)
        with open(path + ".json", "w") as f:
            json.dump(meta, f, separators=(",", ":"))
        return len(buf)


def run_case(outdir, name, init_sd, x, y, cfg):
    torch.manual_seed(1)
    m = NarrowResNet()
    m.load_state_dict(init_sd)
    params = apply_freeze(m, cfg["first_trainable"])
    mult = cfg.get("backbone_lr_mult", 1.0)
    groups = [
        {"params": [p for n, p in params if not n.startswith("fc.")], "lr": cfg["lr"] * mult},
        {"params": [p for n, p in params if n.startswith("fc.")], "lr": cfg["lr"]},
    ]
    groups = [g for g in groups if g["params"]]
    if cfg["optim"] == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"],
                              nesterov=cfg["nesterov"], weight_decay=cfg["weight_decay"])
    else:
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=cfg["weight_decay"])
    sched = None
    if cfg.get("sched") == "warmup_cosine":
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=cfg["warmup_start"],
                                                 total_iters=cfg["warmup"])
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["t_max"], eta_min=cfg["eta_min"])
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[cfg["warmup"]])
    elif cfg.get("sched") == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg["step_size"], gamma=cfg["gamma"])
    weight = torch.tensor(cfg["class_weights"]) if cfg.get("class_weights") else None
    crit = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.get("label_smoothing", 0.0))
    blob = Blob()
    losses, lrs = [], []
    for step in range(1, 6):
        lrs.append(opt.param_groups[-1]["lr"])
        opt.zero_grad()
        loss = crit(m(x), y)
        loss.backward()
        losses.append(loss.item())
        if step == 1 and cfg.get("record_grads"):
            for n, p in params:
                blob.add("grad0/" + n, p.grad)
        opt.step()
        if sched is not None:
            sched.step()
        if step in (1, 5):
            for n, t in m.state_dict().items():
                if not torch.equal(t.float(), init_sd[n].float()):
                    blob.add("step%d/%s" % (step, n), t)
    blob.add("loss", torch.tensor(losses))
    cfg = dict(cfg, lrs=lrs)
    size = blob.write(os.path.join(outdir, name), {"config": cfg})
    print("%-14s %7d bytes  losses %s" % (name, size, " ".join("%.5f" % l for l in losses)))


def schedule_tables():
    """lr per step of single-group schedules (eta_min is absolute per group in
    PyTorch, so it is checked here rather than with group multipliers)."""
    def table(make, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sch = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        return lrs
    LR = torch.optim.lr_scheduler
    return [
        dict(kind="step", step_size=3, gamma=0.5, warmup=0, warmup_start=1.0, t_max=0, eta_min=0.0,
             lrs=table(lambda o: LR.StepLR(o, 3, 0.5), 10)),
        dict(kind="cosine", step_size=0, gamma=0.0, warmup=0, warmup_start=1.0, t_max=7, eta_min=0.01,
             lrs=table(lambda o: LR.CosineAnnealingLR(o, 7, 0.01), 8)),
        dict(kind="cosine", step_size=0, gamma=0.0, warmup=3, warmup_start=0.1, t_max=6, eta_min=0.002,
             lrs=table(lambda o: LR.SequentialLR(o, [LR.LinearLR(o, 0.1, total_iters=3),
                                                     LR.CosineAnnealingLR(o, 6, 0.002)], [3]), 10)),
        dict(kind="step", step_size=2, gamma=0.1, warmup=2, warmup_start=0.5, t_max=0, eta_min=0.0,
             lrs=table(lambda o: LR.SequentialLR(o, [LR.LinearLR(o, 0.5, total_iters=2),
                                                     LR.StepLR(o, 2, 0.1)], [2]), 8)),
    ]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "train")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    m = make_model(1234)
    init_sd = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(99)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    y = torch.tensor([0, 2, 1, 2])
    torch.save(init_sd, os.path.join(outdir, "init.pth"))
    print("init.pth       %7d bytes" % os.path.getsize(os.path.join(outdir, "init.pth")))
    common = Blob()
    common.add("x", x)
    common.add("labels", y.float())
    print("common         %7d bytes" % common.write(os.path.join(outdir, "common"),
                                                    {"schedules": schedule_tables()}))
    cases = {
        "sgd_none": dict(optim="sgd", first_trainable=0, lr=0.05, momentum=0.9, nesterov=True,
                         weight_decay=1e-3, record_grads=True),
        "adamw_layer3": dict(optim="adamw", first_trainable=4, lr=0.01, weight_decay=0.05,
                             backbone_lr_mult=0.1, sched="warmup_cosine", warmup=2,
                             warmup_start=0.25, t_max=3, eta_min=0.0),
        "head_only": dict(optim="sgd", first_trainable=5, lr=0.1, momentum=0.9, nesterov=False,
                          weight_decay=1e-4, sched="step", step_size=2, gamma=0.5),
        "smooth_weights": dict(optim="sgd", first_trainable=3, lr=0.05, momentum=0.9, nesterov=False,
                               weight_decay=0.0, label_smoothing=0.1,
                               class_weights=[0.5, 2.0, 1.25]),
    }
    for name, cfg in cases.items():
        run_case(outdir, name, init_sd, x, y, cfg)


if __name__ == "__main__":
    main()
