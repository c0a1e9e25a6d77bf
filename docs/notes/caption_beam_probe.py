"""Greedy decoding against beam search for the shipped captioner: category and main-colour
accuracy on the 100 test objects of the targets and on 400 further test objects.

    python docs/notes/caption_beam_probe.py [--beams 1 4] [--checkpoint data_samples/captioner_tiny]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sar3d_core.caption_eval import score_captions
from sar3d_core.captioner import DEFAULT_CHECKPOINT, SAR3DCaptioner
from sar3d_core.tokens import load_tokens

AR = Path("~/.cache/sar3d/ar").expanduser()
SETS = {"100 test objects": AR / "test_tokens_lift.npz", "400 more test objects": AR / "test400more_tokens_lift.npz"}

p = argparse.ArgumentParser()
p.add_argument("--beams", type=int, nargs="+", default=[1, 4])
p.add_argument("--checkpoint", default=None)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--json", default=None)
a = p.parse_args()
torch.set_num_threads(a.threads)
cap = SAR3DCaptioner.from_pretrained(a.checkpoint or DEFAULT_CHECKPOINT)
rows = []
for name, path in SETS.items():
    loaded = load_tokens(path)
    cap.check_fingerprint(loaded["vqvae_fingerprint"], f"the tokens of {path}")
    for beams in a.beams:
        t = time.perf_counter()
        captions = cap.caption(loaded["sequence"], num_beams=beams)
        s = score_captions(captions, loaded["caption"], loaded["seed"])
        rows.append({"set": name, "beams": beams, "category": s["category_accuracy"], "colour": s["colour_accuracy"],
                     "BLEU-4": s["BLEU-4"], "ROUGE-L": s["ROUGE-L"], "seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
print("| set | beams | category | colour | BLEU-4 | ROUGE-L |\n|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['set']} | {r['beams']} | {r['category']:.1f}% | {r['colour']:.2f}% | {r['BLEU-4']:.2f} | {r['ROUGE-L']:.2f} |")
if a.json:
    Path(a.json).write_text(json.dumps(rows, indent=1))
