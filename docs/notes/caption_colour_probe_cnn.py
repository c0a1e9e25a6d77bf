"""How much main colour do the first K-2 scales carry for a reader of their layout? Probes on the
VQVAE's accumulated latent f_hat after 4 scales (3 planes x 8 x 8 cells x 8 channels) of the 10,000
training objects' tokens, scored on the targets' 100 test objects and the 400 further ones:

* the MLP of caption_colour_probe.py on f_hat pooled per plane (mean and max, 48 features),
* the same MLP on f_hat in full (1536 features),
* a small CNN (two 3x3 convs over the planes' cells stacked as 24 channels, 2x2 average pooling,
  then an MLP on the flattened 4 x 4 map: the feature network v1.1's layout reader), two seeds.

    cd docs/notes && python caption_colour_probe_cnn.py [--json ../../benchmarks/results/caption_colour_probe_cnn.json]
"""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from caption_colour_probe import home, probe
from caption_colour_probe_fhat import features

from sar3d_core.world import COLOURS

TESTS = ("test_tokens_lift", "test400more_tokens_lift")


def cnn_probe(xtr, ytr, tests, seed, width=64, epochs=15):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(24, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(width * 16, 256), nn.GELU(),
                        nn.Dropout(0.3), nn.Linear(256, len(COLOURS)))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(epochs):
        net.train()
        for i in torch.randperm(len(xtr)).split(128):
            opt.zero_grad()
            F.cross_entropy(net(xtr[i]), ytr[i]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = lambda x, y: round(100 * (net(x).argmax(1) == y).float().mean().item(), 1)  # noqa: E731
        return {"train_first_1000": acc(xtr[:1000], ytr[:1000]), **{t: acc(x, y) for t, (x, y) in tests.items()}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for pooled in (True, False):
        xtr, ytr = features(f"{home}/train_tokens_lift_10k.npz", 4, pooled)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        tests = {t: features(f"{home}/{t}.npz", 4, pooled) for t in TESTS}
        name = f"MLP on f_hat {'pooled per plane' if pooled else 'in full'} ({xtr.shape[1]} features)"
        rows[name] = {}
        for t, (x, y) in tests.items():
            torch.manual_seed(0)
            tr, te = probe((xtr - mu) / sd, ytr, (x - mu) / sd, y)
            rows[name].update(train_first_1000=round(100 * tr, 1), **{t: round(100 * te, 1)})
        print(name, rows[name], flush=True)
    shape = (-1, 24, 8, 8)  # the last features() call: f_hat in full
    tests = {t: (((x - mu) / sd).view(shape), y) for t, (x, y) in tests.items()}
    for seed in (0, 1):
        name = f"CNN on f_hat's cells, seed {seed}"
        rows[name] = cnn_probe(((xtr - mu) / sd).view(shape), ytr, tests, seed)
        print(name, rows[name], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
