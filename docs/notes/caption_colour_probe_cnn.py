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
from caption_colour_probe import fit, home, mlp
from caption_colour_probe_fhat import features

from sar3d_core.world import COLOURS

TESTS = ("test_tokens_lift", "test400more_tokens_lift")


def accuracies(net, xtr, ytr, tests):
    """A trained probe's accuracy (%) on the first 1000 training rows and on each test set."""
    with torch.no_grad():
        acc = lambda x, y: round(100 * (net(x).argmax(1) == y).float().mean().item(), 1)  # noqa: E731
        return {"train_first_1000": acc(xtr[:1000], ytr[:1000]), **{t: acc(x, y) for t, (x, y) in tests.items()}}


def cnn(width=64):
    return nn.Sequential(nn.Conv2d(24, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(width * 16, 256), nn.GELU(),
                         nn.Dropout(0.3), nn.Linear(256, len(COLOURS)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for pooled in (True, False):
        xtr, ytr = features(f"{home}/train_tokens_lift_10k.npz", 4, pooled)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr = (xtr - mu) / sd
        tests = {}
        for t in TESTS:
            x, y = features(f"{home}/{t}.npz", 4, pooled)
            tests[t] = ((x - mu) / sd, y)
        name = f"MLP on f_hat {'pooled per plane' if pooled else 'in full'} ({xtr.shape[1]} features)"
        torch.manual_seed(0)
        rows[name] = accuracies(fit(mlp(xtr.shape[1]), xtr, ytr), xtr, ytr, tests)
        print(name, rows[name], flush=True)
    shape = (-1, 24, 8, 8)  # the last pass: f_hat in full, the planes' channels stacked
    xtr, tests = xtr.view(shape), {t: (x.view(shape), y) for t, (x, y) in tests.items()}
    for seed in (0, 1):
        name = f"CNN on f_hat's cells, seed {seed}"
        torch.manual_seed(seed)
        rows[name] = accuracies(fit(cnn(), xtr, ytr, epochs=15), xtr, ytr, tests)
        print(name, rows[name], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
