"""The decoder fine-tune table: reconstructions of 30 test objects (paired against the shipped
decoder) and the shipped text generator's samples decoded by each decoder, from the JSON files of
``benchmarks/decoder_ft_eval.sh`` (and the shipped decoder's own ``text_eval_10k_6500*.json``).

    python benchmarks/decoder_ft_table.py shipped decoder_only_600 decoder_only_ss2_600
    python benchmarks/decoder_ft_table.py --shipped-text benchmarks/results/refined_ft/text_ft_refined_points_seed \
        shipped draw_control draw_draws_s0.5

``--shipped-text PREFIX``: the shipped decoder's text rows are ``PREFIX{seed}.json`` (the text generator
of the day) instead of the 6500-step model's files.
"""
import json
import statistics as st
import sys
from pathlib import Path

OUT = Path("benchmarks/results/decoder_ft")
SHIPPED_TEXT = {0: Path("benchmarks/results/text_eval_10k_6500.json"),
                1000: Path("benchmarks/results/text_eval_10k_6500_seed1000.json")}


def text_file(name: str, seed: int) -> Path:
    return SHIPPED_TEXT[seed] if name == "shipped" else OUT / f"text_eval_{name}_seed{seed}.json"


def main(names):
    base = json.loads((OUT / "vqvae_shipped_30.json").read_text())["objects"]
    print("| decoder | PSNR (dB) | paired gain, mean +- s.e. (objects better) | mask IoU | hue err. (deg) "
          "| featnet category / colour |")
    print("|---|---|---|---|---|---|")
    for name in names:
        d = json.loads((OUT / f"vqvae_{name}_30.json").read_text())
        s, rows = d["summary"], d["objects"]
        diff = [b["psnr"] - a["psnr"] for a, b in zip(base, rows)]
        gain = "-" if name == "shipped" else (f"{st.mean(diff):+.2f} +- {st.stdev(diff) / len(diff) ** 0.5:.2f} "
                                              f"({sum(x > 0 for x in diff)}/{len(diff)})")
        print(f"| {name} | {s['psnr']:.2f} | {gain} | {s['mask_iou']:.4f} | {s['hue_error_deg']:.1f} "
              f"| {100 * s['category_accuracy']:.1f} / {100 * s['colour_accuracy']:.1f}% |")
    print()
    print("| decoder | category (seeds 0 / 1000) | colour | FID | COV-CD | MMD-CD x10^3 "
          "| short prompts: category (seeds) / colour (seeds) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        runs = [json.loads(text_file(name, s).read_text()) for s in (0, 1000) if text_file(name, s).is_file()]
        if not runs:
            continue
        t = [r["test_captions"] for r in runs]
        sp = [r["short_prompts"] for r in runs]
        j = lambda xs, f="{:.1f}": " / ".join(f.format(x) for x in xs)  # noqa: E731
        print(f"| {name} | {j([100 * x['category_accuracy'] for x in t])}% "
              f"| {j([100 * x['colour_accuracy'] for x in t])}% "
              f"| {j([x['FID'] for x in t])} | {j([100 * x['COV-CD'] for x in t], '{:.0f}')}% "
              f"| {j([1000 * x['MMD-CD'] for x in t], '{:.2f}')} "
              f"| {j([100 * x['category_accuracy'] for x in sp])}% / {j([100 * x['colour_accuracy'] for x in sp])}% |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--shipped-text"]:
        SHIPPED_TEXT = {seed: Path(f"{args[1]}{seed}.json") for seed in (0, 1000)}
        args = args[2:]
    main(args or ["shipped", "decoder_only_600", "decoder_only_ss2_600"])
