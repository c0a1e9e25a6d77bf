"""Does the text generator overfit its 10,000 training objects? Teacher-forced loss and accuracy per scale
on training objects against test objects, for several generators (a chain of longer training).

    python docs/notes/ar_heldout_loss.py --generators NAME=FOLDER ... \
        --train ~/.cache/sar3d/ar/train_tokens_lift_10k.npz --test ~/.cache/sar3d/ar/test_tokens_lift.npz \
        ~/.cache/sar3d/ar/test400more_tokens_lift.npz --objects 500 --json OUT.json

Both sides are one-pass tokens of the shipped VQVAE (the encoder's own, as `sar3d data tokenize` writes
them), each object conditioned on its full caption, the model in eval mode (no condition dropout). The
first ``--objects`` training objects are the training side; the test side is the test files' objects.
A generator that keeps learning what generalises lowers both; one that overfits lowers the training
side only.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sar3d_core.ar_train import encode_conditions, load_generator, teacher_inputs
from sar3d_core.conditioning import ConditionEncoder
from sar3d_core.generate import find_vqvae
from sar3d_core.vqvae import SAR3DVQVAE


def token_set(paths, limit: int) -> tuple[torch.Tensor, list]:
    seqs, caps = [], []
    for p in paths:
        d = np.load(Path(p).expanduser())
        seqs.append(torch.from_numpy(d["sequence"].astype(np.int64)))
        caps += [str(c) for c in d["caption"]]
    seq = torch.cat(seqs)[:limit]
    return seq, caps[:limit]


@torch.no_grad()
def scores(model, quantizer, cond: dict, seq, batch: int = 50) -> dict:
    """Teacher-forced loss and accuracy, overall and by scale, of ``seq`` under conditions ``cond``."""
    teacher = teacher_inputs(model, quantizer, seq)
    rows = []
    for i in range(0, seq.shape[0], batch):
        sl = slice(i, i + batch)
        out = model.loss(model(teacher[sl], cond["pooled"][sl], cond["tokens"][sl], cond["mask"][sl]), seq[sl])
        rows.append((seq[sl].shape[0], out))
    n = sum(w for w, _ in rows)
    mean = lambda get: sum(w * torch.tensor(get(o), dtype=torch.float64) for w, o in rows) / n  # noqa: E731
    return {"loss": mean(lambda o: o["loss"].item()).item(), "accuracy": mean(lambda o: o["accuracy"]).item(),
            "loss_per_scale": mean(lambda o: o["loss_per_scale"]).tolist(),
            "accuracy_per_scale": mean(lambda o: o["accuracy_per_scale"]).tolist()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generators", nargs="+", required=True, help="NAME=FOLDER")
    p.add_argument("--train", required=True)
    p.add_argument("--test", nargs="+", required=True)
    p.add_argument("--objects", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    sides = {"train": token_set([a.train], a.objects), "test": token_set(a.test, a.objects)}
    encoder = ConditionEncoder.tiny_clip()  # every generator here reads it: encode each side's captions once
    conds = {side: encode_conditions(encoder, "text", captions=caps) for side, (_, caps) in sides.items()}
    out = {"objects": {k: len(v[1]) for k, v in sides.items()}, "train": a.train, "test": a.test, "generators": {}}
    print("| generator | side | loss | accuracy | loss by scale | accuracy by scale |")
    print("|---|---|---|---|---|---|")
    for spec in a.generators:
        name, folder = spec.split("=")
        model, meta = load_generator(folder)
        model.eval()
        quantizer = SAR3DVQVAE.from_pretrained(find_vqvae(meta["vqvae_checkpoint"])).quantizer
        out["generators"][name] = {"folder": folder}
        for side, (seq, _) in sides.items():
            s = scores(model, quantizer, conds[side], seq)
            out["generators"][name][side] = s
            print(f"| {name} | {side} | {s['loss']:.3f} | {s['accuracy']:.1f}% | "
                  f"{', '.join(f'{v:.2f}' for v in s['loss_per_scale'])} | "
                  f"{', '.join(f'{v:.0f}' for v in s['accuracy_per_scale'])} |", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
