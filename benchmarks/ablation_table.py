"""Markdown table of VQVAE runs scored by ``vqvae_eval --json``: one row per eval.json.

    python benchmarks/ablation_table.py runs/ablation/*/eval.json
"""
import json
import sys
from pathlib import Path

COLUMNS = [("PSNR dB", "psnr", "{:.2f}"), ("oracle dB", "psnr_oracle", "{:.2f}"), ("IoU", "mask_iou", "{:.3f}"),
           ("hue err. mean / median (deg)", None, None), ("colour MAE", "colour_mae", "{:.3f}"),
           ("category", "category_accuracy", "{:.1%}"), ("colour acc.", "colour_accuracy", "{:.1%}"),
           ("codebook", "codebook_usage", "{:.1%}")]


def row(path: Path) -> str:
    s = json.loads(path.read_text())["summary"]
    cells = [path.parent.name]
    for _, key, fmt in COLUMNS:
        if key is None:
            cells.append(f"{s['hue_error_deg']:.1f} / {s['hue_error_median_deg']:.1f}")
        else:
            cells.append(fmt.format(s[key]) if key in s else "-")
    return "| " + " | ".join(cells) + " |"


def main(paths) -> str:
    head = "| run | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)] + [row(Path(p)) for p in paths]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
