"""The triplane field's own ceiling: fit one object's feature planes freely, without encoder or decoder.

For each of the first ``--limit`` test objects, the shipped VQVAE's decoded feature planes for that
object are taken as a start and then optimised directly (with the field's MLP) on the object's 12 views:
random rays on and near the object and elsewhere, stratified samples, L1 on RGB and L2 on the mask,
as the training's render loss. No encoder, quantizer or decoder stands between the views and the
planes, so what this reaches is what the representation (plane size, feature channels, field MLP,
samples per ray) can hold at all; the shipped model, which must predict planes from the input views
through 384 tokens, sits below it. ``--upsample 2`` fits planes of twice the size (bilinear start).

``--target latent`` fits the latent triplane instead (the quantizer's ``f_hat`` as a start, then free
continuous values), through the shipped decoder and field, both frozen: what the shipped decoder can
render from the best latent of its size. Between the two: how much of the gap is the decoder's and
the latent's, and how much the encoder's (which must find that latent from the input views).
``--fit-views input`` fits on the 6 input views alone (the views an encoder sees) and scores the 6
novel ones apart; ``--quantize`` (with ``--target latent``) passes the fitted latent through the
quantizer (Alg. 1) and scores the decoded tokens: whether the better latent survives as tokens.
``--target tokens`` fits the encoder's continuous latent through the quantizer (straight-through, as
in training), so the fit chooses tokens: are there better tokens for the object than the encoder's?

Printed per object and on the mean: PSNR of the 12 views (2 x 2 rays per pixel, as ``vqvae_eval``) of
the shipped reconstruction, of the fitted planes, and of the exact object through the same renderer.

    python docs/notes/vqvae_free_planes.py --limit 4 --steps 600 [--upsample 2] [--json out.json]
"""
import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sar3d_core.data import INPUT_VIEWS, MultiViewDataset
from sar3d_core.metrics import psnr
from sar3d_core.triplane import render_pixels
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import EVAL_VIEWS, oracle_render
from sar3d_core.world.objects import make_object


def views_psnr(model, field, planes, c, true_rgb) -> tuple[float, float, float]:
    """PSNR over all views, the input views and the novel views (``EVAL_VIEWS`` order)."""
    saved = model.field
    model.field = field
    try:
        out = model.render(planes, c, model.cfg.image_size, chunk=8192, supersample=2)
    finally:
        model.field = saved
    p, n = psnr(out["rgb"][0].clamp(0, 1), true_rgb), len(INPUT_VIEWS)
    return float(p.mean()), float(p[:n].mean()), float(p[n:].mean())


def fit(model, start, c, rgb, mask, steps: int, rays: int, lr: float, seed: int, target: str = "planes"):
    """Fitted to the views ``rgb (V, 3, H, W)``, ``mask (V, 1, H, W)``: planes and a copy of the field
    (``target="planes"``, ``start`` the planes), or a latent triplane decoded by the frozen decoder
    into planes for the frozen field (``"latent"``, ``start`` the latent; ``"tokens"``, ``start`` the
    encoder's latent, quantized on the way) -> ``(planes, field, the fitted tensor)``."""
    free = start.clone().requires_grad_(True)
    if target == "planes":
        field = copy.deepcopy(model.field).train()
        opt = torch.optim.Adam([{"params": [free], "lr": lr}, {"params": field.parameters(), "lr": lr * 0.1}])
        make_planes = lambda: free  # noqa: E731
    else:
        field = model.field
        model.requires_grad_(False)
        opt = torch.optim.Adam([free], lr=lr)
        if target == "tokens":  # Alg. 1 on the free latent, straight-through: forward f_hat, gradient to f
            make_planes = lambda: model.decode_fhat(model.quantizer(free).f_hat)  # noqa: E731
        else:
            make_planes = lambda: model.decode_fhat(free)  # noqa: E731
    V, _, H, W = rgb.shape
    flat_rgb = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    flat_mask = mask.reshape(-1)
    near = (F.max_pool2d(mask, 5, stride=1, padding=2) > 0.01).reshape(-1)  # on or within 2 px of the object
    g = torch.Generator().manual_seed(seed)
    samples = model.triplane_settings.num_samples
    on = torch.nonzero(near)[:, 0]
    for step in range(steps):
        pick_on = on[torch.randint(len(on), (rays // 2,), generator=g)]
        pick_any = torch.randint(V * H * W, (rays - rays // 2,), generator=g)
        index = torch.cat([pick_on, pick_any])[None]
        out = render_pixels(make_planes(), field, c, H, W, index, samples, stratified=True, generator=g)
        loss = (out["rgb"][0] - flat_rgb[index[0]]).abs().mean() + ((out["mask"][0] - flat_mask[index[0]]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # linear decay to 0.1x over the last half
            group.setdefault("lr0", group["lr"])
            group["lr"] = group["lr0"] * (1.0 if step < steps // 2 else 1.0 - 0.9 * (step - steps // 2) / (steps - steps // 2))
    with torch.no_grad():
        return make_planes().detach(), field.eval(), free.detach()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="data_samples/vqvae_tiny_lift")
    p.add_argument("--data", default=str(Path.home() / ".cache/sar3d/proc_test_64"))
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--rays", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--upsample", type=int, default=1, help="fit planes this many times larger (bilinear start)")
    p.add_argument("--target", choices=("planes", "latent", "tokens"), default="planes",
                   help="fit the feature planes and the field, the latent through the frozen decoder and field, "
                        "or the encoder's latent through the quantizer too")
    p.add_argument("--fit-views", choices=("all", "input"), default="all",
                   help="fit on all 12 views or on the 6 input views only (the novel ones scored apart)")
    p.add_argument("--quantize", action="store_true", help="with --target latent: score the fitted latent's tokens")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.quantize and args.target != "latent":
        p.error("--quantize needs --target latent")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SAR3DVQVAE.from_pretrained(args.checkpoint).eval()
    dataset = MultiViewDataset(args.data, size=model.cfg.image_size, target_views=EVAL_VIEWS)
    rows = []
    for i in tqdm(range(min(args.limit, len(dataset))), desc="objects"):
        item = dataset[i]
        c, rgb, mask = item["target_c"][None], item["target_rgb"], item["target_mask"]
        with torch.no_grad():
            f = model.encoder(item["encoder_input"][None], item["input_c"][None])
            tokens = model.quantizer(f).tokens
            latent = model.quantizer.tokens_to_fhat(tokens, len(model.cfg.scales))
            planes = model.decode_fhat(latent)
            shipped = views_psnr(model, model.field, planes, c, rgb)
            ref = oracle_render(make_object(int(item["seed"])), c[0], model.cfg.image_size,
                                model.triplane_settings.num_samples, model.field.bound)
            oracle = float(psnr(ref["rgb"][0].clamp(0, 1), rgb).mean())
        start = {"planes": planes, "latent": latent, "tokens": f}[args.target]
        if args.upsample > 1 and args.target == "planes":
            B, P, Fc, h, w = planes.shape
            start = F.interpolate(planes.reshape(B * P, Fc, h, w), scale_factor=args.upsample, mode="bilinear",
                                  align_corners=False).reshape(B, P, Fc, h * args.upsample, w * args.upsample)
        n = len(INPUT_VIEWS) if args.fit_views == "input" else len(EVAL_VIEWS)
        fitted, field, fitted_latent = fit(model, start, c[:, :n], rgb[:n], mask[:n], args.steps, args.rays, args.lr, seed=i,
                            target=args.target)
        row = {"seed": int(item["seed"]), "oracle_psnr": oracle}
        with torch.no_grad():
            results = {"shipped": shipped, f"free_{args.target}": views_psnr(model, field, fitted, c, rgb)}
            if args.quantize:
                results["free_latent_tokens"] = views_psnr(model, field, model.decode_fhat(model.quantizer(fitted_latent).f_hat),
                                                           c, rgb)
        for name, (all_, inp, novel) in results.items():
            row.update({f"{name}_psnr": all_, f"{name}_psnr_input": inp, f"{name}_psnr_novel": novel})
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    summary.update(objects=len(rows), target=args.target, fit_views=args.fit_views, steps=args.steps, rays=args.rays, lr=args.lr, upsample=args.upsample,
                   plane_size=list(fitted.shape[-2:]), checkpoint=args.checkpoint)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
