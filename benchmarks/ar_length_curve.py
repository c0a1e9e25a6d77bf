"""MMD-CD and category accuracy of the text generator against its training length, past the budget.

    python benchmarks/ar_length_curve.py --plot benchmarks/results/ar_length/curve.png \
        [--json benchmarks/results/ar_length/curve.json] [--points "LABEL=EXPORT[+EXPORT...]=PATTERN" ...]

Each point is a chain of training runs: EXPORT folders (``--export`` of ``sar3d train ar``), each
started from the one before it, whose ``config.json`` steps and training seconds add up; PATTERN its
score files (``benchmarks/eval_text_generator.py --json``) with ``{seed}``. The default points are the
chains of RESULTS: the shipped recipe's base at 1800 steps (two training seeds) and at 6500, the shipped
model (6500 + 1600 on refined tokens) and the two legs of ``benchmarks/ar_length_beyond_budget.sh``.
The horizontal lines are the references of "MMD: what a caption allows" in RESULTS: the VQVAE's
reconstructions of the same test objects, the 1.5x target and a perfect caption follower.
"""
import argparse
import json
from pathlib import Path

SHIPPED = "runs/ar_text_10k_twins_export+runs/ar_text_ft_refined_export"
DEFAULT_POINTS = (
    "1800 steps=runs/ar_size/128x3_export=benchmarks/results/ar_size/text_128x3_seed{seed}.json",
    "1800 steps, training seed 1=runs/ar_size/128x3_seed1_export=benchmarks/results/ar_size/text_128x3_seed1_seed{seed}.json",
    "6500 steps (the shipped model's base)=runs/ar_text_10k_twins_export="
    "benchmarks/results/codebook/text_k1024_6500_seed{seed}.json",
    f"shipped (6500 + 1600 on refined tokens)={SHIPPED}="
    "benchmarks/results/refined_ft/text_ft_refined_points_seed{seed}.json",
    f"shipped + 3200={SHIPPED}+runs/ar_length/more1_export=benchmarks/results/ar_length/more1_seed{{seed}}.json",
    f"shipped + 6400={SHIPPED}+runs/ar_length/more1_export+runs/ar_length/more2_export="
    "benchmarks/results/ar_length/more2_seed{seed}.json",
)
RECONSTRUCTIONS = ("benchmarks/results/codebook/k1024_shipped_reference.json", "MMD-CD")
FOLLOWER = ("benchmarks/results/mmd_attribute_oracle.json", "draw_0_vqvae")  # through the VQVAE
BUDGET_MINUTES = 60.0


def chain(exports: str) -> tuple[int, float]:
    """Steps and training minutes of a chain of exports, each the ``--init`` of the next."""
    steps = seconds = 0
    for folder in exports.split("+"):
        tr = json.loads(Path(folder, "config.json").read_text())["training"]
        steps, seconds = steps + tr["steps"], seconds + tr["train_seconds"]
    return steps, seconds / 60


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", nargs="+", default=list(DEFAULT_POINTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1000])
    p.add_argument("--plot", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = []
    for spec in a.points:
        label, exports, pattern = spec.split("=")
        steps, minutes = chain(exports)
        runs = [json.loads(Path(pattern.format(seed=s)).read_text())["test_captions"] for s in a.seeds]
        rows.append({"label": label, "steps": steps, "minutes": minutes, "exports": exports.split("+"),
                     "MMD-CD": [r["MMD-CD"] for r in runs], "COV-CD": [r["COV-CD"] for r in runs],
                     "category": [r["category_accuracy"] for r in runs],
                     "colour": [r["colour_accuracy"] for r in runs], "FID": [r["FID"] for r in runs]})
    recon = json.loads(Path(RECONSTRUCTIONS[0]).read_text())[RECONSTRUCTIONS[1]]
    follower = json.loads(Path(FOLLOWER[0]).read_text())["sets"][FOLLOWER[1]]["MMD-CD"]
    print(f"seeds {a.seeds}; MMD-CD x10^3 of the reconstructions {1000 * recon:.2f}, target (1.5x) "
          f"{1500 * recon:.2f}, a perfect caption follower through the VQVAE {1000 * follower:.2f}")
    print("| generator | steps | training (2-core CPU) | category | colour | FID | COV-CD | MMD-CD x10^3 | "
          "MMD / reconstructions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mmd = sum(r["MMD-CD"]) / len(r["MMD-CD"])
        fmt = lambda key, scale, f: " / ".join(format(v * scale, f) for v in r[key])  # noqa: E731
        print(f"| {r['label']} | {r['steps']} | {r['minutes']:.1f} min | {fmt('category', 100, '.1f')} | "
              f"{fmt('colour', 100, '.1f')} | {fmt('FID', 1, '.1f')} | {fmt('COV-CD', 100, '.0f')} | "
              f"{fmt('MMD-CD', 1000, '.2f')} | {mmd / recon:.2f}x |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"seeds": a.seeds, "reconstructions_MMD-CD": recon,
                                            "caption_follower_vqvae_MMD-CD": follower, "points": rows}, indent=1))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
        for r in rows:
            for key, axis, scale in (("MMD-CD", ax, 1000), ("category", bx, 100)):
                vals = [v * scale for v in r[key]]
                axis.scatter([r["minutes"]] * len(vals), vals, s=14, color="tab:blue")
                axis.scatter([r["minutes"]], [sum(vals) / len(vals)], marker="_", s=200, color="tab:blue")
        for y, text, style in ((1000 * follower, "a perfect caption follower (through the VQVAE)", "--"),
                               (1500 * recon, "the 1.5x target", ":"), (1000 * recon, "the reconstructions", "-")):
            ax.axhline(y, color="gray", linestyle=style, linewidth=1)
            ax.text(ax.get_xlim()[0], y, " " + text, fontsize=7, va="bottom", color="gray")
        for axis in (ax, bx):
            axis.axvline(BUDGET_MINUTES, color="tab:red", linewidth=1)
            axis.text(BUDGET_MINUTES, axis.get_ylim()[1], " 60-min budget", fontsize=7, va="top", color="tab:red")
            axis.set_xlabel("training minutes on the 2-core CPU (cumulative along the chain)")
        ax.set_ylabel("MMD-CD x10^3 (100 test captions)"); ax.set_ylim(0, None)
        bx.set_ylabel("category accuracy, %")
        ax.set_title("MMD against training length", fontsize=9)
        bx.set_title("category against training length", fontsize=9)
        fig.tight_layout()
        Path(a.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.plot, dpi=110)
        print(f"wrote {a.plot}")
    return rows


if __name__ == "__main__":
    main()
