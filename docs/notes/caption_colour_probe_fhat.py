"""The same colour probe as caption_colour_probe.py, on the VQVAE's accumulated latent f_hat
after the first k scales (what its decoder would read), pooled over each plane (mean and max).

    python docs/notes/caption_colour_probe_fhat.py
"""
import numpy as np
import torch
from caption_colour_probe import colour_labels, home, model, probe  # the same labels and probe

from sar3d_core import captioner as cap, tokens
from sar3d_core.quantizer import sequence_to_tokens

vq = cap.load_vqvae_for(model)  # after caption_colour_probe's seed and captioner, as the recorded run


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
    return torch.cat(out), colour_labels(loaded)


if __name__ == "__main__":
    for pooled in (True, False):
        for keep in (2, 4, 6):
            xtr, ytr = features(f"{home}/train_tokens_lift_10k.npz", keep, pooled)
            xte, yte = features(f"{home}/test_tokens_lift.npz", keep, pooled)
            mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
            xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
            tr, te = probe(xtr, ytr, xte, yte)
            print(f"f_hat after {keep} scales, {'pooled' if pooled else 'full'} ({xtr.shape[1]} features): "
                  f"train {100 * tr:.1f}%, test {100 * te:.1f}%")
