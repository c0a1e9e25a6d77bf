"""Does bfloat16 autocast speed up a training step on this CPU (AMX)? Times the shipped text
generator's forward + backward on random inputs of the training shapes, fp32 against bf16 autocast.

    python docs/notes/cpu_bf16_step.py [--threads 1] [--batch 8] [--repeats 10]
"""
import argparse
import time

import torch

from sar3d_core.ar_train import load_generator


def random_batch(model, meta: dict, batch: int) -> tuple:
    """``(x, pooled, tokens, mask, target)``: random inputs of the training shapes of a generator
    (``meta``: its config.json), 16 condition tokens."""
    B, L, C = batch, model.seq_len, model.latent_channels
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, L - model.num_start, C, generator=g), torch.randn(B, meta["cond_dim"], generator=g),
            torch.randn(B, 16, meta["cond_token_dim"], generator=g), torch.ones(B, 16),
            torch.randint(model.codebook_size, (B, L), generator=g))


def step(model, x, pooled, tokens, mask, target, bf16: bool) -> float:
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x, pooled, tokens, mask)
    loss = model.loss(logits, target)["loss"]
    loss.backward()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, meta = load_generator(a.checkpoint)
    model.train()
    batch = random_batch(model, meta, a.batch)
    for bf16 in (False, True, False, True):
        for _ in range(2):
            step(model, *batch, bf16)
        ts = sorted(step(model, *batch, bf16) for _ in range(a.repeats))
        print(f"{'bf16' if bf16 else 'fp32'}: median {1000 * ts[len(ts) // 2]:.0f} ms per forward+backward "
              f"(batch {a.batch}, {model.seq_len} tokens, {a.threads} thread(s))")


if __name__ == "__main__":
    main()
