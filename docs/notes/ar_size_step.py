"""What a text-generator training step costs at other widths and depths (fixed budget planning).
Times forward + backward of a freshly built next-scale text model on random inputs of the training
shapes (8 sequences per process, the shipped batch), one thread, for each WIDTHxDEPTH given.

    python docs/notes/ar_size_step.py --sizes 128x3 192x3 128x6 [--threads 1] [--repeats 8] [--codebook 1024]
"""
import argparse
import dataclasses
import json

import torch
from cpu_bf16_step import random_batch, step  # the same timed step, fp32 here (run from the repository root)

from sar3d_core.ar_train import load_generator
from sar3d_core.config import SAR3DConfig
from sar3d_core.transformer import SAR3DTransformer, TransformerSettings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["128x3"], help="WIDTHxDEPTH, e.g. 192x3")
    p.add_argument("--reference", default="data_samples/ar_text_tiny", help="a text generator: shapes, settings")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--codebook", type=int, default=None, help="codebook size (default: the reference's VQVAE's)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    _, meta = load_generator(a.reference)
    cfg = SAR3DConfig.from_dict({**meta["vqvae_config"], **({"codebook_size": a.codebook} if a.codebook else {})})
    base = TransformerSettings(**meta["settings"])
    rows = []
    for size in a.sizes:
        width, depth = (int(v) for v in size.lower().split("x"))
        settings = dataclasses.replace(base, width=width, depth=depth)
        torch.manual_seed(0)
        model = SAR3DTransformer.from_config(cfg, meta["cond_dim"], meta["cond_token_dim"], "text", settings).train()
        batch = random_batch(model, meta, a.batch)
        for _ in range(2):
            step(model, *batch, bf16=False)
        ts = sorted(step(model, *batch, bf16=False) for _ in range(a.repeats))
        row = {"width": width, "depth": depth, "parameters": model.num_parameters(),
               "ms_per_step": round(1000 * ts[len(ts) // 2], 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = rows[0]["ms_per_step"]
    for r in rows:
        print(f"{r['width']}x{r['depth']}: {r['parameters'] / 1e6:.2f} M parameters, {r['ms_per_step']:.0f} ms "
              f"per forward+backward ({r['ms_per_step'] / ref:.2f}x the first), batch {a.batch}, {a.threads} thread(s)")


if __name__ == "__main__":
    main()
