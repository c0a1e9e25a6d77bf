"""Table of a FlexiCubes lambda sweep: one row per run's ``eval.json`` (benchmarks/flexicubes_lambda_sweep.sh).

    .venv/bin/python benchmarks/flexicubes_sweep_table.py runs/fc_sweep/*_200/eval.json
    .venv/bin/python benchmarks/flexicubes_sweep_table.py benchmarks/results/flexicubes_sweep/*.json  (the copies kept)
"""
import json
import sys
from pathlib import Path


def main(paths):
    print("| run (lambda_normal, lambda_reg, steps) | Chamfer x10^3 (mean; median) | vs MC, paired (better on) "
          "| normal consistency | NC vs MC | faces |")
    print("|---|---|---|---|---|---|")
    base_done = False
    for path in sorted(paths):
        result = json.loads(Path(path).read_text())
        for r in result["rows"]:
            if r["method"] != "flexicubes (fine-tuned)" and base_done:
                continue
            run = Path(path).parent.name if Path(path).name == "eval.json" else Path(path).stem
            name = run if r["method"] == "flexicubes (fine-tuned)" else r["method"]
            vs = ("-" if r["method"].startswith("marching") else
                  f"{r['chamfer_x1e3_minus_mc']:+.3f} +- {r['chamfer_x1e3_minus_mc_sem']:.3f} "
                  f"({100 * r['better_than_mc_share']:.0f}%)")
            nc = "-" if r["method"].startswith("marching") else f"{r['normal_consistency_minus_mc']:+.3f}"
            print(f"| {name} | {r['chamfer_x1e3']:.3f}; {r['chamfer_x1e3_median']:.3f} | {vs} | "
                  f"{r['normal_consistency']:.3f} | {nc} | {r['faces_per_mesh']:.0f} |")
        base_done = True


if __name__ == "__main__":
    main(sys.argv[1:])
