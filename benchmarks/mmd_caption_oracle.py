"""MMD-CD of a perfect caption follower: what COV/MMD a text-to-3D model scores when every sample
is a real object of the world that fits its caption, but not the test object itself.

    python benchmarks/mmd_caption_oracle.py --data ~/.cache/sar3d/proc_test_64 \
        --train ~/.cache/sar3d/proc_train_10k --limit 100 --json benchmarks/results/mmd_caption_oracle.json

For each test caption, the training object (of ``--train``) whose caption is the same, else the one
of the same category sharing the most caption words (the held-out (category, colour) pairs never
occur in training); its exact surface stands in for the sample. COV/MMD/1-NNA with Chamfer on
the same points as ``ar_eval.evaluate_text`` (``EVAL_POINTS`` on each exact surface), against the
exact surfaces of the test objects. Two draws (``--draws``): the best and the second-best match.
"""
import argparse
import json
import time
from pathlib import Path

from sar3d_core.ar_eval import _cloud_metrics, exact_points, test_records


def words(caption: str) -> set:
    return set(caption.lower().replace(",", " ").replace(".", " ").split())


def matches(record, train, train_words, k: int) -> tuple[list, int]:
    """The k training records that fit ``record``'s caption best, and how many share its caption exactly
    (``train_words[i]``: the words of ``train[i]``'s caption)."""
    same = [i for i, r in enumerate(train) if r["category"] == record["category"]]
    target = words(record["caption"])
    ranked = sorted(same, key=lambda i: (train[i]["caption"] != record["caption"], -len(train_words[i] & target)))
    return [train[i] for i in ranked[:k]], sum(train[i]["caption"] == record["caption"] for i in same)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    test = test_records(Path(a.data).expanduser(), a.limit)
    train = test_records(Path(a.train).expanduser())
    ref = exact_points(test)
    train_words = [words(r["caption"]) for r in train]  # once, not per test caption
    picked = [matches(r, train, train_words, a.draws) for r in test]
    out = {"data": a.data, "train": a.train, "objects": len(test), "training_objects": len(train),
           "same_caption_in_training": sum(n > 0 for _, n in picked),
           "same_category_and_colour": [sum(m[d]["attributes"].get("colour") == r["attributes"].get("colour")
                                            for (m, _), r in zip(picked, test)) for d in range(a.draws)],
           "draws": []}
    for d in range(a.draws):
        clouds = list(exact_points([m[d] for m, _ in picked]))
        out["draws"].append({k: v for k, v in _cloud_metrics(clouds, ref).items() if k != "protocol"})
        print(f"draw {d}: {out['draws'][-1]}", flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: v for k, v in out.items() if k != "draws"}))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
