"""A figure for the MMD diagnosis: test chairs and stools, exact, reconstructed, with their fine scales drawn, sampled.

    python docs/notes/drawn_scales_figure.py --data ~/.cache/sar3d/proc_test_64 --out benchmarks/results/drawn_scales_chairs.png

Columns: the exact object; the VQVAE's one-pass reconstruction (all six scales true); the same tokens
with scales 5-6 (6x6, 8x8) drawn by the shipped text generator for the caption, scales 1-4 kept; a
plain sample for the caption. Seed ``--seed`` for every draw; rendered from the first evaluation camera.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sar3d_core.ar_eval import eval_cameras, ground_truth_renders, test_records  # noqa: E402
from sar3d_core.data import MultiViewDataset  # noqa: E402
from sar3d_core.generate import Pipeline  # noqa: E402


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--categories", default="chair,stool")
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--keep", type=int, default=4, help="true scales kept in the third column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    data = Path(a.data).expanduser()
    records = test_records(data, 100)
    idx = [i for i, r in enumerate(records) if r["category"] in a.categories.split(",")][:a.count]
    gen = Pipeline.from_pretrained(a.checkpoint)
    vq = gen.vqvae
    ds = MultiViewDataset(data, size=vq.cfg.image_size)
    truth = [vq.encode(ds[i]["encoder_input"][None], ds[i]["input_c"][None]).tokens for i in idx]
    truth = [torch.cat([t[k] for t in truth]) for k in range(len(truth[0]))]
    cond = gen.condition(text=[records[i]["caption"] for i in idx])
    columns = {"exact": None,
               "reconstruction": truth,
               f"scales {a.keep + 1}-{len(truth)} drawn": gen.sample_tokens(cond, seed=a.seed, prefix=truth[:a.keep]),
               "sample": gen.sample_tokens(cond, seed=a.seed)}
    cam = eval_cameras()[:1][None].expand(len(idx), -1, -1)
    images = {"exact": ground_truth_renders([records[i] for i in idx]).view(len(idx), 2, 3, 64, 64)[:, 0]}
    for name, tokens in columns.items():
        if tokens is not None:
            images[name] = vq.render(vq.decode_tokens(tokens), cam, 64, chunk=8192)["rgb"][:, 0].clamp(0, 1)
    fig, ax = plt.subplots(len(idx), len(images), figsize=(1.6 * len(images), 1.6 * len(idx)))
    for r in range(len(idx)):
        for c, (name, im) in enumerate(images.items()):
            ax[r, c].imshow(im[r].permute(1, 2, 0).numpy())
            ax[r, c].axis("off")
            if r == 0:
                ax[r, c].set_title(name, fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=100)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
