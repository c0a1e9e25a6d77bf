"""Image to 3D, then a search on the condition view: does refining the sampled tokens help the novel views?

For each of the first ``--limit`` test objects, the shipped image generator samples with its shipped
settings (``generate.IMAGE_SAMPLING``: best of 16 by agreement with the condition view, then 16 more
from scale 4, without the fit), as ``ar_eval.evaluate_image`` does. The kept sample is then fitted to
its condition image by ``Pipeline.fit_condition_view`` (the sample's latent ``f_hat`` re-quantized, then
``SAR3DVQVAE.refine_latent`` on the image's RGB, its non-white pixels as the mask). Printed: PSNR of the novel views 6-11 (2 x 2 rays per pixel, as the targets) of the sample,
of its latent re-quantized without a search (what the search starts from) and after ``--steps``;
and PSNR at the condition view itself.

    python docs/notes/image_token_refinement.py --limit 20 --steps 50 [--json out.json]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sar3d_core.data import MultiViewDataset
from sar3d_core.generate import DEFAULT_IMAGE, IMAGE_SAMPLING, Pipeline
from sar3d_core.metrics import psnr


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path.home() / ".cache/sar3d/proc_test_64"))
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = Pipeline.from_pretrained(DEFAULT_IMAGE)
    vq = gen.vqvae.eval()
    view = gen.meta.get("condition_view", 0)
    ds = MultiViewDataset(args.data, size=vq.cfg.image_size)
    novel = list(range(6, 12))
    sampling = {k: v for k, v in IMAGE_SAMPLING.items() if k not in ("candidates", "refine_from", "fit_steps")}
    rows = []
    for i in range(min(args.limit, len(ds))):
        mv = ds.read(i)
        image, cam = mv.rgb[view], mv.c[view]
        cond = gen.condition(image=image[None])
        tokens, planes, _ = gen.sample_best_of(cond, [image], IMAGE_SAMPLING["candidates"], cam[None],
                                               refine_from=IMAGE_SAMPLING["refine_from"], seed=i, **sampling)
        t0 = time.perf_counter()
        fitted, fitted_planes = gen.fit_condition_view(tokens, image[None], args.steps, cam[None], seed=i)
        seconds = time.perf_counter() - t0
        row = {"seed": int(ds.items[i][2]), "refine_seconds": seconds}
        with torch.no_grad():
            requantized = vq.quantizer(vq.quantizer.tokens_to_fhat(tokens, len(vq.cfg.scales))).tokens
            for name, pl in (("sample", planes), ("requantized", vq.decode_tokens(requantized)),
                             ("refined", fitted_planes)):
                c = torch.cat([mv.c[novel], cam[None]])[None]
                rgb = vq.render(pl, c, chunk=8192, supersample=2)["rgb"][0].clamp(0, 1)
                row[f"{name}_novel"] = float(psnr(rgb[:6], mv.rgb[novel]).mean())
                row[f"{name}_condition_view"] = float(psnr(rgb[6:], image[None]).mean())
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    keys = [k for k in rows[0] if k != "seed"]
    summary = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    diff = [r["refined_novel"] - r["sample_novel"] for r in rows]
    summary.update(objects=len(rows), steps=args.steps,
                   novel_better=sum(d > 0 for d in diff), generator=gen.name)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
