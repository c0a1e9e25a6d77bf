"""Does a tiny CLIP tell a caption from its colour-swapped twin? ("red-to-blue" vs "blue-to-red")

For the test-split objects whose two colours are not interchangeable (gradient, striped, dotted,
two-tone; ``conditioning.ORDERED_PATTERNS``), one random view each: a hit when the render's image
embedding is closer (cosine) to the object's caption than to the same caption with its two colours
swapped (``conditioning.twin_prompts``). Chance is 50%. Also the cosine between the pooled text
features of the twins (what the text generator's AdaLN reads).

    python docs/notes/clip_twin_probe.py data_samples/tiny_clip runs/tiny_clip_twins_export --json benchmarks/results/clip_twin_probe.json
"""
import argparse
import collections
import json

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

from sar3d_core import conditioning
from sar3d_core.featnet import render_objects
from sar3d_core.world import objects_in_split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--count", type=int, default=400, help="first test-split objects to look at")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    objs = [o for o in objects_in_split("test", a.count) if o.attributes["pattern"] in conditioning.ORDERED_PATTERNS]
    pairs = [(o, conditioning.twin_prompts(o, [o.caption])[0]) for o in objs]
    pairs = [(o, t) for o, t in pairs if t]
    with conditioning._num_threads(1):
        images = render_objects([o for o, _ in pairs], 1, seed=7, progress=False).float() / 255
    x = (images - torch.tensor(conditioning.CLIP_MEAN)[:, None, None]) / torch.tensor(conditioning.CLIP_STD)[:, None, None]
    out = {"objects": len(pairs), "folders": {}}
    for folder in a.folders:
        clip = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with torch.no_grad():
            img = clip.get_image_features(pixel_values=x)
            img = F.normalize(getattr(img, "pooler_output", img), dim=-1)  # an output object in newer transformers

            def text(prompts):
                enc = tok(prompts, padding="max_length", truncation=True, return_tensors="pt")
                feats = clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
                feats = getattr(feats, "pooler_output", feats)
                pooled = clip.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
                return F.normalize(feats, dim=-1), pooled

            cap, cap_pooled = text([o.caption.lower() for o, _ in pairs])
            twin, twin_pooled = text([t for _, t in pairs])
        hit = ((img * cap).sum(-1) > (img * twin).sum(-1)).tolist()
        by = collections.defaultdict(list)
        for (o, _), h in zip(pairs, hit):
            by[o.attributes["pattern"]].append(h)
        row = {"caption_beats_twin": round(100 * float(np.mean(hit)), 1),
               **{p: round(100 * float(np.mean(v)), 1) for p, v in sorted(by.items())},
               "pooled_text_cosine_of_twins": round(F.cosine_similarity(cap_pooled, twin_pooled).mean().item(), 4)}
        out["folders"][folder] = row
        print(folder, json.dumps(row))
    out["per_pattern_objects"] = {p: sum(o.attributes["pattern"] == p for o, _ in pairs) for p in conditioning.ORDERED_PATTERNS}
    print(out["per_pattern_objects"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
