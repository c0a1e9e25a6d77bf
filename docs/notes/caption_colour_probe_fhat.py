"""The same colour probe as caption_colour_probe.py, on the VQVAE's accumulated latent f_hat
after the first k scales (what its decoder would read), pooled over each plane (mean and max).

    python docs/notes/caption_colour_probe_fhat.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from sar3d_core import caption_eval, captioner as cap, tokens
from sar3d_core.quantizer import sequence_to_tokens
from sar3d_core.world import COLOURS

torch.manual_seed(0)
torch.set_num_threads(2)
home = os.path.expanduser("~/.cache/sar3d/ar")
model = cap.load_default()
vq = cap.load_vqvae_for(model)
colour_id = {c: i for i, c in enumerate(COLOURS)}


@torch.no_grad()
def features(path, keep, pooled):
    loaded = tokens.load_tokens(path)
    seq = torch.as_tensor(np.asarray(loaded["sequence"]))
    out = []
    for part in seq.split(500):
        tk = sequence_to_tokens(part, vq.quantizer.scales)
        f = vq.quantizer.tokens_to_fhat(tk, keep)  # (B, 3, C, h, w)
        f = f.flatten(1, 2) if f.ndim == 5 else f
        out.append(torch.cat([f.mean((-1, -2)), f.amax((-1, -2))], 1) if pooled else f.flatten(1))
    y = torch.tensor([colour_id[caption_eval.true_attributes(int(s), r)["colour"]]
                      for s, r in zip(loaded["seed"], loaded["caption"])])
    return torch.cat(out), y


for pooled in (True, False):
    for keep in (2, 4, 6):
        xtr, ytr = features(f"{home}/train_tokens_lift_10k.npz", keep, pooled)
        xte, yte = features(f"{home}/test_tokens_lift.npz", keep, pooled)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        net = torch.nn.Sequential(torch.nn.Linear(xtr.shape[1], 256), torch.nn.GELU(), torch.nn.Dropout(0.2),
                                  torch.nn.Linear(256, len(COLOURS)))
        opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
        for epoch in range(30):
            net.train()
            for i in torch.randperm(len(xtr)).split(128):
                opt.zero_grad()
                F.cross_entropy(net(xtr[i]), ytr[i]).backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            tr = (net(xtr[:1000]).argmax(1) == ytr[:1000]).float().mean().item()
            te = (net(xte).argmax(1) == yte).float().mean().item()
        print(f"f_hat after {keep} scales, {'pooled' if pooled else 'full'} ({xtr.shape[1]} features): "
              f"train {100 * tr:.1f}%, test {100 * te:.1f}%")
