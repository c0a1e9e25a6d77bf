"""A smaller codebook for the AR stage, started from the shipped VQVAE (the codebook lever).

``merge``: cluster the shipped codebook's entries into K (spherical k-means over the l2-normalised
entries, each entry weighted by how often the training tokens use it) and write a VQVAE whose codebook
is the K centroids, everything else kept. It is used as it is, with new tokens (a 400-step fine-tune of
the whole VQVAE lost colour); `benchmarks/ar_codebook_ablation.sh` runs the chain.
``reference``: the generators' ceiling of a VQVAE (`ar_eval.reconstruction_reference`: COV/MMD-CD of
its reconstructions of the test objects, their category/colour and FID by the feature network).

    python benchmarks/codebook_merge.py merge --vqvae data_samples/vqvae_tiny_lift \
        --tokens ~/.cache/sar3d/ar/train_tokens_lift_10k.npz --codes 256 --out runs/codebook/k256_merged
    python benchmarks/codebook_merge.py reference --vqvae runs/codebook/k256_merged \
        --data ~/.cache/sar3d/proc_test_64 --limit 100 --json benchmarks/results/codebook/k256_merged_reference.json
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from sar3d_core.config import SAR3DConfig
from sar3d_core.tokens import load_tokens
from sar3d_core.vqvae import SAR3DVQVAE


def weighted_spherical_kmeans(x_VC: torch.Tensor, w_V: torch.Tensor, k: int, iters: int = 50,
                              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centroids (k, C) of unit norm, assignment (V,))`` of unit vectors ``x`` with weights ``w``;
    k-means++ seeding by weight, an emptied cluster re-seeded on the worst-served heavy entry."""
    g = torch.Generator().manual_seed(seed)
    w = w_V.double().clamp_min(1e-6)
    cent = [x_VC[torch.multinomial(w, 1, generator=g)].squeeze(0)]
    for _ in range(1, k):
        dist = (1 - x_VC @ torch.stack(cent).T).min(dim=1).values.clamp_min(0)
        cent.append(x_VC[torch.multinomial(w * dist.double() + 1e-12, 1, generator=g)].squeeze(0))
    cent_kC = torch.stack(cent)
    for _ in range(iters):
        assign = (x_VC @ cent_kC.T).argmax(dim=1)
        new = torch.zeros_like(cent_kC).index_add_(0, assign, x_VC * w_V[:, None].float())
        mass = torch.zeros(k).index_add_(0, assign, w_V.float())
        served = (x_VC * cent_kC[assign]).sum(dim=1)
        for j in torch.nonzero(mass == 0).flatten().tolist():  # empty: take the heaviest badly-served entry
            worst = torch.argmax(w_V.float() * (1 - served))
            new[j], assign[worst], served[worst] = x_VC[worst], j, 1.0  # served now: not taken twice
        cent_kC = F.normalize(new, dim=1)
    return cent_kC, (x_VC @ cent_kC.T).argmax(dim=1)


def merge(a) -> None:
    vqvae = SAR3DVQVAE.from_pretrained(a.vqvae)
    q = vqvae.quantizer
    if not q.l2_codes:
        raise SystemExit(f"{a.vqvae}: its quantizer compares raw codes; this merge assumes l2-normalised ones")
    if not 1 <= a.codes < q.codebook_size:
        raise SystemExit(f"--codes {a.codes}: give a size between 1 and {q.codebook_size - 1}")
    seq = load_tokens(a.tokens, vqvae.cfg, vqvae.fingerprint())["sequence"]
    usage = torch.bincount(seq.reshape(-1), minlength=q.codebook_size)
    codes = F.normalize(q.codebook.weight.detach().float(), dim=1)
    cent, assign = weighted_spherical_kmeans(codes, usage.float(), a.codes, seed=a.seed)
    used = int((usage > 0).sum())
    kept = (usage.double() * (codes * cent[assign]).sum(dim=1).double()).sum() / usage.sum()
    cfg = SAR3DConfig.from_dict({**vqvae.cfg.to_dict(), "codebook_size": a.codes})
    merged = SAR3DVQVAE(cfg)
    state = vqvae.state_dict()
    state["quantizer.codebook.weight"] = cent.to(state["quantizer.codebook.weight"].dtype)
    state["quantizer.usage_counts"] = torch.zeros(a.codes)
    state["quantizer.steps_since_used"] = torch.zeros(a.codes, dtype=torch.long)
    merged.load_state_dict(state)
    merged.save_pretrained(a.out)
    info = {"from": a.vqvae, "tokens": a.tokens, "codes": a.codes, "used_codes_before": used,
            "usage_weighted_cosine_to_centroid": round(float(kept), 4), "fingerprint": merged.fingerprint()}
    Path(a.out, "merge.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


def reference(a) -> None:
    from sar3d_core.ar_eval import reconstruction_reference
    from sar3d_core.featnet import load_default

    torch.set_num_threads(a.threads)
    r = reconstruction_reference(SAR3DVQVAE.from_pretrained(a.vqvae).eval(), a.data, a.limit, featnet=load_default())
    r = {"vqvae": a.vqvae, "limit": a.limit, **r}
    print(json.dumps({k: v for k, v in r.items() if not isinstance(v, (list, dict))}, default=str))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(r, indent=2, default=str))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--vqvae", default="data_samples/vqvae_tiny_lift")
    m.add_argument("--tokens", required=True, help="training tokens of --vqvae (usage weights)")
    m.add_argument("--codes", type=int, required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--vqvae", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--limit", type=int, default=100)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--json", default=None)
    a = p.parse_args()
    with torch.no_grad():
        (merge if a.cmd == "merge" else reference)(a)


if __name__ == "__main__":
    main()
