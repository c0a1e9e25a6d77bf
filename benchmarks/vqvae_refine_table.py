"""The token-refinement tables of docs/RESULTS.md, from the JSON files of ``vqvae_eval``:
the 30-object curve (``benchmarks/vqvae_refine_curve.sh``) and the 100-object pair (the shipped
checkpoint's one pass, re-measured under feature network v1.1, against ``metrics_refined.json``).
Paired gains are per object, refined minus one pass, mean +- standard error.

    python benchmarks/vqvae_refine_table.py
"""
import json
import statistics as st
from pathlib import Path

CURVE = Path("benchmarks/results/vqvae_refine")
ONE_PASS_100 = Path("benchmarks/results/judge_v11/vqvae_tiny_lift.json")  # v1.1 colours; the same renders
ONE_PASS_100_CHAMFER = Path("data_samples/vqvae_tiny_lift/metrics.json")  # the one pass with Chamfer (v1 colours)
REFINED_100 = Path("data_samples/vqvae_tiny_lift/metrics_refined.json")


def paired(base: list, rows: list, key: str) -> str:
    by_seed = {r["seed"]: r[key] for r in base}
    diff = [r[key] - by_seed[r["seed"]] for r in rows]
    better = sum(d > 0 for d in diff)
    return f"{st.mean(diff):+.2f} +- {st.stdev(diff) / len(diff) ** 0.5:.2f} ({better}/{len(diff)})"


def row(name: str, d: dict, base: dict | None, chamfer: float | None = None) -> str:
    s = d["summary"]
    gains = [paired(base["objects"], d["objects"], k) if base is not None else "-" for k in ("psnr", "psnr_novel")]
    seconds = f"{s['refine_seconds']:.1f}" if "refine_seconds" in s else "-"
    chamfer = s.get("chamfer_x1e3", chamfer)
    return (f"| {name} | {s['psnr']:.2f} | {s['psnr_input']:.2f} | {s['psnr_novel']:.2f} | {gains[0]} | {gains[1]} "
            f"| {s['mask_iou']:.4f} | {s['category_accuracy']:.1%} / {s['colour_accuracy']:.1%} "
            f"({s['colour_accuracy_clean']:.1%}) | {s['hue_error_deg']:.1f} | {s['codebook_usage']:.1%} | "
            + (f"{chamfer:.3f}" if chamfer is not None else "-") + f" | {seconds} |")


HEAD = ("| tokens | PSNR, 12 views | input views | novel views | paired gain, 12 views (better) | paired gain, novel "
        "(better) | mask IoU | featnet v1.1 category / colour (true views) | hue err. (deg) | codebook | Chamfer x10^3 "
        "| s an object |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def main():
    print("30 test objects, refinement seed 0 (and 1):\n")
    print(HEAD)
    base = json.loads((CURVE / "steps0_30.json").read_text())
    for steps in (0, 50, 100, 200):
        for tag, seed in (("", 0), ("_seed1", 1)):
            path = CURVE / f"steps{steps}_30{tag}.json"
            if path.is_file():
                name = "one pass" if steps == 0 else f"refined, {steps} steps" + (f", seed {seed}" if seed else "")
                print(row(name, json.loads(path.read_text()), None if steps == 0 else base))
    if REFINED_100.is_file():
        print("\n100 test objects (the README's protocol):\n")
        print(HEAD)
        one = json.loads(ONE_PASS_100.read_text())
        chamfer = json.loads(ONE_PASS_100_CHAMFER.read_text())["summary"].get("chamfer_x1e3")
        print(row("one pass", one, None, chamfer))
        refined = json.loads(REFINED_100.read_text())
        print(row(f"refined, {refined['summary']['refine_steps']} steps", refined, one))


if __name__ == "__main__":
    main()
