"""Markdown table of the per-keep captioner ablation (benchmarks/captioner_keep_ablation.sh).

    python benchmarks/captioner_keep_table.py benchmarks/results/caption_keep/*.json [--plot PNG]
"""
import argparse
import json
import re
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--plot", default=None, help="also draw accuracy against the share of tokens fed")
    a = p.parse_args(argv)
    rows = []
    for f in a.files:
        d = json.loads(Path(f).read_text())
        stage2 = re.search(r"_(\d+)\.json$", f)
        rows.append((d["keep"], d["tokens_fed"], int(stage2.group(1)) if stage2 else None, d["main"], d.get("blind", {})))
    rows.sort(key=lambda r: (r[2] or 0, r[0]))
    total = None
    print("| keep (scales fed) | tokens | stage-2 steps | category | colour | held-out cat. / col. | BLEU-4 | ROUGE-L "
          "| blind: category / colour |")
    print("|---|---|---|---|---|---|---|---|---|")
    for keep, n, s2, m, b in rows:
        h = m["heldout"]
        blind = f"{b['category_accuracy']:.0f}% / {b['colour_accuracy']:.0f}%" if b else ""
        print(f"| {keep} | {n} | {s2} | {m['category_accuracy']:.1f}% | {m['colour_accuracy']:.1f}% | "
              f"{h['category_accuracy']:.1f}% / {h['colour_accuracy']:.1f}% | {m['BLEU-4']:.2f} | {m['ROUGE-L']:.2f} | {blind} |")
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        for key, label in [("category_accuracy", "category"), ("colour_accuracy", "main colour")]:
            ax.plot([r[0] for r in rows], [r[3][key] for r in rows], "o-", label=label)
        ax.set_xlabel("scales fed (trained and tested with that many)")
        ax.set_ylabel("accuracy on 100 test objects (%)")
        ax.set_xticks([r[0] for r in rows])
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)
        print(f"plot: {a.plot}")
    return rows


if __name__ == "__main__":
    main()
