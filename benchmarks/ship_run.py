"""Ship a trained run into data_samples/: its exported weights and config, its loss curve, and a
training.json with the command, the measured wall time (from runs/retrain/times.txt, written by
benchmarks/retrain_generators.sh) and the run's log.

    python benchmarks/ship_run.py STEP RUN_DIR EXPORT_DIR DEST [--note TEXT] [--times FILE --script NAME]
                                  [--base TRAINING_JSON]

e.g. ``python benchmarks/ship_run.py text runs/ar_text_lift runs/ar_text_lift_export data_samples/ar_text_tiny``.
A fine-tune (``train ar --init``) names the record of the model it started from with ``--base``: it is
kept, whole, under ``"base"``, so both commands and both wall times stay beside the weights.
"""
import argparse
import json
import re
import shutil
from pathlib import Path


def wall_and_command(step: str, times=Path("runs/retrain/times.txt")) -> tuple[str, float]:
    """The command and wall seconds of the last run of ``step`` in the retrain log."""
    text = times.read_text(encoding="utf-8")
    commands = re.findall(rf"^== {re.escape(step)} (\S+): (.*)$", text, flags=re.M)
    walls = re.findall(rf"^{re.escape(step)} wall ([0-9.]+) s$", text, flags=re.M)
    if not commands or not walls:
        raise SystemExit(f"no finished step {step!r} in {times}")
    return commands[-1][1], float(walls[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step")
    p.add_argument("run_dir")
    p.add_argument("export_dir")
    p.add_argument("dest")
    p.add_argument("--note", default="")
    p.add_argument("--times", default="runs/retrain/times.txt", help="the timing log of the script that ran STEP")
    p.add_argument("--script", default="benchmarks/retrain_generators.sh", help="the script that ran STEP")
    p.add_argument("--base", default=None, help="training.json of the model a fine-tune started from")
    a = p.parse_args(argv)
    base = json.loads(Path(a.base).read_text(encoding="utf-8")) if a.base else None  # before dest is replaced
    command, wall = wall_and_command(a.step, Path(a.times))
    dest, export, run = Path(a.dest), Path(a.export_dir), Path(a.run_dir)
    if dest.resolve() != export.resolve():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(export, dest)
    if (run / "loss.png").is_file():
        shutil.copy(run / "loss.png", dest / "loss.png")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    command = command.replace("env OMP_NUM_THREADS=1 ", "").replace(str(Path.home()), "~").replace(".venv/bin/", "")
    record = {"command": "OMP_NUM_THREADS=1 " + command,
              "script": f"{a.script} {a.step}",
              "wall_clock_of_training_command": f"{int(wall // 60)} min {wall % 60:.0f} s ({wall:.0f} s), "
                                                "2-core CPU, the only training job",
              "shipped_from": str(export), "note": a.note, "log": log, **({"base": base} if base else {})}
    (dest / "training.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"shipped {export} -> {dest} ({wall:.0f} s, {len(log)} log rows)")


if __name__ == "__main__":
    main()
