"""Is a gradient's order in the first scales' tokens? A probe on gradient objects only.

The main colour of a gradient object is its bottom colour; its caption names it first. Probes
(the MLP of caption_colour_probe.py, 30 epochs) read the VQVAE's accumulated latent f_hat after
the first k scales of the 10,000 training objects' tokens, restricted to their gradient objects,
and name the main colour of the test split's gradient objects (the targets' 100 and the 400 more):
how often they name the main colour, and how often the other (top) one.

    python docs/notes/gradient_order_probe_fhat.py
"""
import numpy as np
import torch
from caption_colour_probe import home, model, probe  # noqa: F401  (the same probe, seed and captioner)
from caption_colour_probe_fhat import features  # f_hat after k scales, pooled per plane or in full

from sar3d_core import caption_eval, tokens
from sar3d_core.world import COLOURS, make_object

names = list(COLOURS)


def gradient_rows(path):
    loaded = tokens.load_tokens(path)
    rows, second = [], []
    for i, (s, r) in enumerate(zip(loaded["seed"], loaded["caption"])):
        obj = make_object(int(s))
        if obj.attributes["pattern"] == "gradient" and caption_eval.true_attributes(int(s), r)["colour"] == \
                obj.attributes["colour"]:
            rows.append(i)
            second.append(names.index(obj.attributes["secondary_colour"]))
    return rows, torch.tensor(second)


tests = [f"{home}/test_tokens_lift.npz", f"{home}/test400more_tokens_lift.npz"]
train_rows, _ = gradient_rows(f"{home}/train_tokens_lift_10k.npz")
test_rows = [gradient_rows(p) for p in tests]
print(f"{len(train_rows)} gradient objects in training, {sum(len(r) for r, _ in test_rows)} in the test files")
for pooled in (True, False):
    for keep in (4, 6):
        xtr, ytr = features(f"{home}/train_tokens_lift_10k.npz", keep, pooled)
        xtr, ytr = xtr[train_rows], ytr[train_rows]
        parts = [features(p, keep, pooled) for p in tests]
        xte = torch.cat([x[r] for (x, _), (r, _) in zip(parts, test_rows)])
        yte = torch.cat([y[r] for (_, y), (r, _) in zip(parts, test_rows)])
        y2 = torch.cat([s for _, s in test_rows])
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        torch.manual_seed(0)
        tr, te, pred = probe(xtr, ytr, xte, yte, predictions=True)
        print(f"f_hat after {keep} scales, {'pooled' if pooled else 'full'} ({xtr.shape[1]} features): "
              f"train {100 * tr:.1f}%, test main colour {100 * te:.1f}%, "
              f"the top colour instead {100 * float((pred == y2).float().mean()):.1f}%")
