"""The table of the AR stage's size and codebook ablations (benchmarks/ar_size_ablation.sh,
benchmarks/ar_codebook_ablation.sh): per generator its size, training time and final teacher-forced
accuracy by scale, then its scores on the 100 test captions at sampling seeds 0 / 1000.

    python benchmarks/ar_lever_table.py --rows "NAME=RUN_DIR=PATTERN[=REFERENCE_JSON]" ...

RUN_DIR is the training run folder (log.jsonl; its export, config.json, is RUN_DIR + "_export"); PATTERN
the score files with ``{seed}``; REFERENCE_JSON
(optional) the generator's VQVAE's reconstructions (benchmarks/codebook_merge.py reference), whose MMD-CD
the generator's is divided by. Without one the shipped VQVAE's reference is used.
"""
import argparse
import json
from pathlib import Path

SHIPPED_REFERENCE = "benchmarks/results/codebook/k1024_shipped_reference.json"
DEFAULT_ROWS = tuple(f"{s}=runs/ar_size/{s}=benchmarks/results/ar_size/text_{s}_seed{{seed}}.json"
                     for s in ("128x3", "192x3", "128x6"))  # the size rows of RESULTS
SCORES = (("category", "category_accuracy", 100, ".1f"), ("colour", "colour_accuracy", 100, ".1f"),
          ("held-out category", "heldout_category_accuracy", 100, ".1f"), ("FID", "FID", 1, ".1f"),
          ("COV-CD", "COV-CD", 100, ".0f"), ("MMD-CD x10^3", "MMD-CD", 1000, ".2f"),
          ("1-NNA-CD", "1-NNA-CD", 100, ".1f"))


def last_rows(run_dir: Path, n: int = 50) -> dict:
    """Mean loss and accuracies of the last ``n`` logged steps of a run."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r][-n:]
    keys = ["loss", "accuracy"] + sorted(k for k in rows[-1] if k.startswith("acc_s"))
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1000])
    p.add_argument("--json", default=None, help="also write each row's training record and cells here")
    a = p.parse_args(argv)
    records = []
    head = ["generator", "parameters", "steps", "training", "final loss / accuracy (by scale)"]
    head += [s[0] for s in SCORES] + ["MMD / its VQVAE's reconstructions", "short prompts: category"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in a.rows:
        name, run_dir, pattern, *ref = row.split("=")
        run_dir = Path(run_dir)
        meta = json.loads(Path(f"{run_dir}_export", "config.json").read_text())
        tr = meta["training"]
        fin = last_rows(run_dir)
        by_scale = ", ".join(f"{fin[k]:.0f}" for k in sorted(k for k in fin if k.startswith("acc_s")))
        runs = [json.loads(Path(pattern.format(seed=s)).read_text()) for s in a.seeds]
        cells = [name, f"{meta['parameters'] / 1e6:.2f} M", str(tr["steps"]),
                 f"{tr['train_seconds'] / 60:.1f} min", f"{fin['loss']:.2f} / {fin['accuracy']:.1f}% ({by_scale})"]
        for _, key, scale, fmt in SCORES:
            vals = [r["test_captions"][key] * scale for r in runs]
            cells.append(" / ".join(format(v, fmt) for v in vals))
        ref_path = Path(ref[0] if ref else SHIPPED_REFERENCE)
        if ref_path.is_file():
            ref_mmd = json.loads(ref_path.read_text())["MMD-CD"]
            mmd = sum(r["test_captions"]["MMD-CD"] for r in runs) / len(runs)
            cells.append(f"{mmd / ref_mmd:.2f}x ({1000 * ref_mmd:.2f})")
        else:
            cells.append("")
        cells.append(" / ".join(f"{100 * r['short_prompts']['category_accuracy']:.1f}" for r in runs))
        lines.append("| " + " | ".join(cells) + " |")
        records.append({"row": row, "training": tr, "parameters": meta["parameters"], "last_50_steps": fin,
                        "cells": dict(zip(head, cells))})
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=2))
    table = "\n".join(lines)
    print(f"100 test captions, sampling seeds {' / '.join(map(str, a.seeds))}; CFG 4 with the ramp, top-k 10, "
          f"top-p 0.5\n{table}")
    return table


if __name__ == "__main__":
    main()
