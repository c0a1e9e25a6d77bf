"""Where the shipped captioner loses the main colour: train against test, and the confusions.

    python docs/notes/caption_colour_diagnosis.py [--train 300] [--keep K]
"""
import argparse
import collections
import os

import torch

from sar3d_core import caption_eval, captioner as cap, tokens

ap = argparse.ArgumentParser()
ap.add_argument("--train", type=int, default=300)
ap.add_argument("--keep", type=int, default=None)
ap.add_argument("--checkpoint", default=None)
args = ap.parse_args()
torch.set_num_threads(1)
home = os.path.expanduser("~/.cache/sar3d/ar")
model = cap.SAR3DCaptioner.from_pretrained(args.checkpoint) if args.checkpoint else cap.load_default()
for name, path, n in [("test", f"{home}/test_tokens_lift.npz", 100), ("train", f"{home}/train_tokens_lift_10k.npz", args.train)]:
    loaded = tokens.load_tokens(path)
    seq, refs, seeds = loaded["sequence"][:n], loaded["caption"][:n], loaded["seed"][:n]
    caps = model.caption(seq, keep=args.keep)
    s = caption_eval.score_captions(caps, refs, seeds)
    conf = collections.Counter()
    for c, r, sd in zip(caps, refs, seeds):
        t = caption_eval.true_attributes(int(sd), r)["colour"]
        g = caption_eval.parse_caption(c)["colour"]
        ref_first = caption_eval.parse_caption(r)["colour"]
        if g != t:
            conf[(t, g, "ref names it first" if ref_first == t else f"ref first: {ref_first}")] += 1
    print(f"{name}: {n} objects, category {s['category_accuracy']}%, colour {s['colour_accuracy']}%")
    for (t, g, note), k in conf.most_common(15):
        print(f"   true {t:>8} -> said {str(g):>8}  x{k}  ({note})")
