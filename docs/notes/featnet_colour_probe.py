"""How well can a 64 px render's main colour be read at all? A probe for the judge (featnet).

The shipped feature network (``data_samples/feature_net``) names the main colour of clean test
renders 72% of the time: 99% on plain objects, far less on patterned ones. This script trains
colour readers on the feature network's own training renders (``featnet.training_renders``,
3000 train/val objects x 4 views, the same augmentation) and scores them per pattern on fresh
renders of 300 test objects (2 views each):

* ``head``: a new MLP head on the frozen feature network's last map, flattened (``--cut``
  selects how many of its layers to keep) or averaged (``--pool``, as v1's own heads);
* ``cnn``: a fresh CNN whose last 4 x 4 map is flattened (no global pooling: a gradient's
  main colour is the one at the bottom), with colour, second-colour and pattern heads.

    python docs/notes/featnet_colour_probe.py cnn --epochs 15 --json benchmarks/results/featnet_colour_probe_cnn.json
    python docs/notes/featnet_colour_probe.py head [--pool] --json benchmarks/results/featnet_colour_probe_head[_pool].json
    python docs/notes/featnet_colour_probe.py judge --judge-folder FOLDER --json ...   (an existing network, per pattern)
"""
import argparse
import collections
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sar3d_core import featnet
from sar3d_core.world import COLOURS, PATTERNS, objects_in_split


def colour_cnn(widths=(32, 32, 64, 64, 128, 128, 192), strides=(2, 1, 2, 1, 2, 1, 2)) -> nn.Module:
    layers, c = [], 3
    for w, s in zip(widths, strides):
        layers += [nn.Conv2d(c, w, 3, s, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c = w
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 16, 256), nn.ReLU(inplace=True), nn.Dropout(0.3))


def held_out_renders():
    """The 600 held-out renders every reader is scored on (as ``featnet.evaluate_on_split``) and their attributes."""
    objs = objects_in_split("test", 300)
    images = featnet.render_objects(objs, 2, seed=1, size=64, progress=False).float() / 255
    return images, [o.attributes for o in objs for _ in range(2)]


def colour_by_pattern(said, labels) -> tuple[float, dict]:
    """Main-colour accuracy of the colour names ``said`` overall and per pattern of ``labels``."""
    by = collections.defaultdict(list)
    for name, d in zip(said, labels):
        by[d["pattern"]].append(name == d["colour"])
    return float(np.mean([v for vs in by.values() for v in vs])), {k: round(float(np.mean(v)), 3) for k, v in by.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("head", "cnn", "judge"),
                   help="judge: score the main-colour head of the network in --judge-folder, per pattern, and stop")
    p.add_argument("--judge-folder", default=None, help="judge: a feature network checkpoint folder")
    p.add_argument("--cut", type=int, default=21, help="head: feature-network layers kept (21: all 7 convs)")
    p.add_argument("--pool", action="store_true", help="head: average the map first (as v1's heads) instead of flattening it")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--objects", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--save", help="write the trained reader (trunk + heads) to this .pt file")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.mode == "judge":
        net = featnet.FeatureNet.from_pretrained(a.judge_folder)
        test, test_labels = held_out_renders()
        acc, by = colour_by_pattern(net.predict(test)["colour"], test_labels)
        row = {"judge": net.name, "colour": round(acc, 4), "by_pattern": by}
        print(json.dumps(row))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(row, f, indent=1)
        return
    net = featnet.load_default().eval()
    for q in net.parameters():
        q.requires_grad_(False)
    images, labels, _ = featnet.training_renders(a.objects, 4, 0, progress=False)
    colours, seconds = list(COLOURS), list(COLOURS) + [featnet.NONE]
    y = torch.tensor([[colours.index(d["colour"]), seconds.index(d["secondary_colour"]),
                       PATTERNS.index(d["pattern"])] for d in labels])
    if a.mode == "head":
        body = net.body[:a.cut]
        with torch.no_grad():
            C, H, W = body(torch.zeros(1, 3, 64, 64)).shape[1:]
        pool = [nn.AdaptiveAvgPool2d(1)] if a.pool else []
        trunk = nn.Sequential(*pool, nn.Flatten(), nn.Linear(C * (1 if a.pool else H * W), 256), nn.ReLU(),
                              nn.Dropout(0.3))
    else:
        body, trunk = nn.Identity(), colour_cnn()
    heads = nn.ModuleList([nn.Linear(256, 12), nn.Linear(256, 13), nn.Linear(256, len(PATTERNS))])
    params = list(trunk.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, 1e-3, weight_decay=1e-2)
    bs = 128
    steps = a.epochs * (len(images) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(a.seed)
    test, test_labels = held_out_renders()

    def evaluate():
        trunk.eval()
        with torch.no_grad():
            pred = heads[0](trunk(body(net._prepare(test)))).argmax(1)
        trunk.train()
        return colour_by_pattern([colours[i] for i in pred.tolist()], test_labels)

    t0, rows = time.perf_counter(), []
    for epoch in range(a.epochs):
        perm = torch.randperm(len(images), generator=g)
        for i in range(0, len(images) - bs + 1, bs):
            idx = perm[i:i + bs]
            x = net._prepare(featnet.augment(images[idx].float() / 255, g))
            with torch.no_grad():
                f = body(x)
            z = trunk(f)
            loss = sum(F.cross_entropy(h(z), y[idx, k]) for k, h in enumerate(heads))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc, by = evaluate()
        rows.append({"epoch": epoch + 1, "loss": round(loss.item(), 3), "seconds": round(time.perf_counter() - t0),
                     "colour": round(acc, 4), "by_pattern": by})
        print(json.dumps(rows[-1]), flush=True)
    if a.save:
        torch.save({"mode": a.mode, "cut": a.cut, "trunk": trunk.state_dict(), "heads": heads.state_dict()}, a.save)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "shipped_featnet": net.name, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
