"""The table of benchmarks/refined_finetune.sh: the shipped text generator before the fine-tunes, fine-tuned
on refined tokens, and fine-tuned on one-pass tokens (the control), each on the 100 test captions at
sampling seeds 0 / 1000 (``benchmarks/eval_text_generator.py --no-points``) and their mean.

    python benchmarks/refined_finetune_table.py [--rows NAME=PATTERN ...]

PATTERN holds ``{seed}``; the default rows read ``benchmarks/results/twin_clip/`` (the generator shipped
before) and ``benchmarks/results/refined_ft/``.
"""
import argparse
import json
from pathlib import Path

DEFAULT_ROWS = ("before the fine-tunes=benchmarks/results/twin_clip/text_seed{seed}.json",
                "fine-tuned on refined tokens=benchmarks/results/refined_ft/text_ft_refined_seed{seed}.json",
                "fine-tuned on one-pass tokens (control)=benchmarks/results/refined_ft/text_ft_onepass_seed{seed}.json")
COLUMNS = (("category", "test_captions", "category_accuracy", 100), ("colour", "test_captions", "colour_accuracy", 100),
           ("held-out category", "test_captions", "heldout_category_accuracy", 100),
           ("held-out colour", "test_captions", "heldout_colour_accuracy", 100), ("FID", "test_captions", "FID", 1),
           ("short prompts: category", "short_prompts", "category_accuracy", 100),
           ("short prompts: colour", "short_prompts", "colour_accuracy", 100))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1000])
    a = p.parse_args(argv)
    lines = ["| text generator | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in a.rows:
        name, pattern = row.split("=", 1)
        runs = [json.loads(Path(pattern.format(seed=s)).read_text()) for s in a.seeds]
        cells = []
        for _, part, key, scale in COLUMNS:
            values = [r[part][key] * scale for r in runs]
            mean = sum(values) / len(values)
            cells.append(" / ".join(f"{v:.1f}" for v in values) + f" (mean {mean:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"sampling seeds {' / '.join(map(str, a.seeds))}, 100 test captions\n{table}")
    return table


if __name__ == "__main__":
    main()
