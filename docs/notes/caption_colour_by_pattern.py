"""The shipped captioner's main-colour accuracy per pattern of the object (plain, striped, ...).

Patterned objects carry two colours; on a checkered one they cover equal areas, and on the
first K-2 scales (at most 4 x 4 cells a plane) stripes, dots and checks blend into one hue.

    python docs/notes/caption_colour_by_pattern.py ~/.cache/sar3d/ar/test_tokens_lift.npz [--limit 100]
"""
import argparse
import collections
import json

import numpy as np
import torch

from sar3d_core import caption_eval, captioner as cap, tokens
from sar3d_core.world import make_object

ap = argparse.ArgumentParser()
ap.add_argument("tokens")
ap.add_argument("--limit", type=int, default=100)
ap.add_argument("--checkpoint", default=None)
ap.add_argument("--json", default=None)
args = ap.parse_args()
torch.set_num_threads(2)
model = cap.SAR3DCaptioner.from_pretrained(args.checkpoint) if args.checkpoint else cap.load_default()
loaded = tokens.load_tokens(args.tokens)
n = min(args.limit, len(loaded["seed"]))
seq, refs, seeds = loaded["sequence"][:n], loaded["caption"][:n], loaded["seed"][:n]
caps = model.caption(seq)
by = collections.defaultdict(lambda: {"main": [], "second": []})
for c, r, sd in zip(caps, refs, seeds):
    obj = make_object(int(sd))
    said = caption_eval.parse_caption(c)["colour"]
    truth = caption_eval.true_attributes(int(sd), r)["colour"]
    by[obj.attributes["pattern"]]["main"].append(said == truth)
    by[obj.attributes["pattern"]]["second"].append(said == obj.attributes.get("secondary_colour"))
rows = {p: {"objects": len(v["main"]), "main_colour": round(100 * float(np.mean(v["main"])), 1),
            "names_the_second_colour": round(100 * float(np.mean(v["second"])), 1)} for p, v in by.items()}
total = 100 * float(np.mean([a for v in by.values() for a in v["main"]]))
print(f"{n} objects, main colour {total:.1f}%")
for p, r in sorted(rows.items(), key=lambda kv: -kv[1]["objects"]):
    print(f"  {p:>9}: {r['objects']:3d} objects, main colour {r['main_colour']:5.1f}%, "
          f"the second colour named first {r['names_the_second_colour']:5.1f}%")
if args.json:
    with open(args.json, "w") as f:
        json.dump({"tokens": args.tokens, "captioner": model.name if hasattr(model, "name") else None,
                   "objects": n, "main_colour": round(total, 2), "by_pattern": rows}, f, indent=1)
