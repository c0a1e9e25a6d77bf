"""How much main colour the first k scales' codes carry: a small MLP probe from the token file.

The features are what the captioner sees, the l2-normalised code vectors of the first k scales
(flattened), and the label is the object's main colour (the world's attribute). Trained on the
10,000 training objects, scored on the 100 test objects.

    python docs/notes/caption_colour_probe.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from sar3d_core import caption_eval, captioner as cap, tokens
from sar3d_core.world import COLOURS

torch.manual_seed(0)
torch.set_num_threads(2)
home = os.path.expanduser("~/.cache/sar3d/ar")
model = cap.load_default()
colour_id = {c: i for i, c in enumerate(COLOURS)}


def features(path, keep):
    loaded = tokens.load_tokens(path)
    seq = torch.as_tensor(np.asarray(loaded["sequence"]))
    ids = model.truncate(seq, keep=keep)
    x = model.code_vectors(ids).flatten(1).detach()
    return x, colour_labels(loaded)


def colour_labels(loaded) -> torch.Tensor:
    """The main colour of each object of a loaded token file, as an index into ``COLOURS``."""
    return torch.tensor([colour_id[caption_eval.true_attributes(int(s), r)["colour"]]
                         for s, r in zip(loaded["seed"], loaded["caption"])])


def mlp(in_features: int) -> torch.nn.Module:
    """The probe's network: one hidden layer of 256."""
    return torch.nn.Sequential(torch.nn.Linear(in_features, 256), torch.nn.GELU(), torch.nn.Dropout(0.2),
                               torch.nn.Linear(256, len(COLOURS)))


def fit(net, xtr, ytr, epochs: int = 30):
    """Train ``net`` on ``(xtr, ytr)`` (AdamW 1e-3, weight decay 0.05, batches of 128); returns it in eval mode."""
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
    for _ in range(epochs):
        net.train()
        for i in torch.randperm(len(xtr)).split(128):
            opt.zero_grad()
            F.cross_entropy(net(xtr[i]), ytr[i]).backward()
            opt.step()
    return net.eval()


def probe(xtr, ytr, xte, yte, predictions: bool = False):
    """Train the MLP probe on ``(xtr, ytr)``; its accuracy on the first 1000 training rows and on the test rows
    (and, with ``predictions``, its predicted class per test row as a third value)."""
    net = fit(mlp(xtr.shape[1]), xtr, ytr)
    with torch.no_grad():
        tr = (net(xtr[:1000]).argmax(1) == ytr[:1000]).float().mean().item()
        pred = net(xte).argmax(1)
        te = (pred == yte).float().mean().item()
    return (tr, te, pred) if predictions else (tr, te)


if __name__ == "__main__":
    for keep in (2, 3, 4, 6):
        xtr, ytr = features(f"{home}/train_tokens_lift_10k.npz", keep)
        xte, yte = features(f"{home}/test_tokens_lift.npz", keep)
        tr, te = probe(xtr, ytr, xte, yte)
        print(f"keep {keep} ({xtr.shape[1] // 8} tokens): probe colour accuracy train {100 * tr:.1f}%, "
              f"test {100 * te:.1f}%")
