"""Does the text generator read which colour comes first? Prompts and their colour-swapped twins.

For ``--pairs`` random (category, colour, second colour) triples this writes a prompt and its
twin with the two colours swapped, for a gradient ("a red-to-blue gradient chair": the main,
first-named colour is the bottom one) and for dots ("a red and blue dotted chair": the main
colour is the ground). The shipped text generator samples each prompt at two seeds; the shipped
feature network names the main colour of two views. A generator that reads the order names the
first colour of both twins; one that reads the colours as a set gets about half of them. The
tiny CLIP's pooled text features of the twins are compared as well (cosine similarity).

    python docs/notes/colour_order_probe.py --pairs 30 [--checkpoint GENERATOR] --json benchmarks/results/colour_order_probe.json
"""
import argparse
import json

import numpy as np
import torch

from sar3d_core import ar_eval
from sar3d_core.featnet import load_default
from sar3d_core.generate import DEFAULT_TEXT, Pipeline
from sar3d_core.world import CATEGORIES, COLOURS

TEMPLATES = {"gradient": "a {c}-to-{c2} gradient {noun}", "dotted": "a {c} and {c2} dotted {noun}",
             "striped": "a {c} and {c2} striped {noun}", "plain": "a {c} {noun}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--patterns", nargs="+", default=["gradient", "dotted", "plain"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=str(DEFAULT_TEXT), help="text generator (default: the shipped one)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    colours = list(COLOURS)
    triples = []
    for _ in range(a.pairs):
        c, c2 = rng.choice(len(colours), 2, replace=False)
        triples.append((CATEGORIES[rng.integers(len(CATEGORIES))], colours[c], colours[c2]))
    gen, judge = Pipeline.from_pretrained(a.checkpoint), load_default()
    out = {"generator": gen.name, "judge": judge.name, "pairs": a.pairs, "seeds": a.seeds, "patterns": {}}
    for pattern in a.patterns:
        fwd = [TEMPLATES[pattern].format(c=c, c2=c2, noun=n) for n, c, c2 in triples]
        rev = [TEMPLATES[pattern].format(c=c2, c2=c, noun=n) for n, c, c2 in triples]
        with torch.no_grad():
            pf, pr = gen.condition(text=fwd).pooled, gen.condition(text=rev).pooled
            cos = torch.nn.functional.cosine_similarity(pf, pr).mean().item()
            other = torch.nn.functional.cosine_similarity(pf, pf.roll(1, 0)).mean().item()
        row = {"text_cosine_twins": round(cos, 4), "text_cosine_other_prompts": round(other, 4)}
        for seed in a.seeds:
            said = {}
            for name, prompts in (("forward", fwd), ("swapped", rev)):
                views = ar_eval.generate_for_captions(gen, prompts, seed=seed, progress=False, cfg=4.0)["views"]
                pred = judge.predict(views.flatten(0, 1))["colour"]
                said[name] = [pred[i * views.shape[1]:(i + 1) * views.shape[1]] for i in range(len(prompts))]
            first_f = [np.mean([p == c for p in ps]) for ps, (_, c, _) in zip(said["forward"], triples)]
            first_r = [np.mean([p == c2 for p in ps]) for ps, (_, _, c2) in zip(said["swapped"], triples)]
            second_f = [np.mean([p == c2 for p in ps]) for ps, (_, _, c2) in zip(said["forward"], triples)]
            second_r = [np.mean([p == c for p in ps]) for ps, (_, c, _) in zip(said["swapped"], triples)]
            row[f"seed {seed}"] = {"first colour judged main": round(100 * float(np.mean(first_f + first_r)), 1),
                                   "second colour judged main": round(100 * float(np.mean(second_f + second_r)), 1)}
        out["patterns"][pattern] = row
        print(pattern, json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
