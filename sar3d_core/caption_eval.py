"""Scoring SAR3D-LLM's captions (paper Sec. 4.3 and 5, Figs. 7-8; ``sar3d eval captions``).

The paper shows its captions (Fig. 8: "the correct **category** and fine **details**") and
reports no caption metric. Here every caption of a token file (a test split) is scored in
three ways:

* **attributes**: the category and the main colour parsed back from the caption with the
  world's own tables (``world.CATEGORY_WORDS``, ``world.COLOURS``; the world's captions always
  name the main colour first, so the first colour named is the main colour), against the
  object's true attributes (``world.make_object(seed)``; for objects without a procedural
  seed, parsed from the reference caption). Accuracy on all objects and on those of the
  held-out (category, colour) pairs (``world.heldout_combinations``), which never occur in
  the training split: they measure whether category and colour are read compositionally;
* **text overlap**: corpus BLEU-4 (``sacrebleu``, lower-cased, its standard 13a tokenisation)
  and mean ROUGE-L F1 (``rouge-score``) against the one reference caption per object;
* **controls**: the ``keep`` ablation (the same captioner fed the first 1..K scales; it was
  trained on ``keep`` of them) and a **blind** baseline whose projected 3D tokens are zeroed,
  so every object gets the caption of the language prior alone.
"""
from __future__ import annotations

import re
from functools import lru_cache

from .world import CATEGORY_WORDS, COLOURS, heldout_combinations, make_object


@lru_cache(maxsize=1)
def _patterns():
    nouns = sorted(((w, c) for c, ws in CATEGORY_WORDS.items() for w in ws), key=lambda wc: -len(wc[0]))
    noun_re = re.compile(r"\b(" + "|".join(re.escape(w) for w, _ in nouns) + r")\b")
    colour_re = re.compile(r"\b(" + "|".join(re.escape(c) for c in COLOURS) + r")\b")
    return noun_re, dict(nouns), colour_re


def parse_caption(text: str) -> dict:
    """``{"category", "colour"}`` named in a caption (None where it names none): the category of the
    first category noun (multi-word nouns such as "pickup truck" first), the first colour named."""
    noun_re, category_of, colour_re = _patterns()
    text = " ".join(str(text).lower().replace("-", " - ").split())  # "red-and-white" names red first
    noun, colour = noun_re.search(text), colour_re.search(text)
    return {"category": category_of[noun.group(1)] if noun else None, "colour": colour.group(1) if colour else None}


def true_attributes(seed: int, reference: str) -> dict:
    """``{"category", "colour"}`` of an object: from its procedural seed, else parsed from its reference caption."""
    if seed >= 0:
        obj = make_object(seed)
        return {"category": obj.category, "colour": obj.attributes["colour"]}
    return parse_caption(reference)


def text_overlap(hypotheses, references) -> dict:
    """Corpus BLEU-4 (sacrebleu, 0-100) and mean ROUGE-L F1 (rouge-score, 0-100) of one reference per caption."""
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError(f"caption metrics need `pip install sacrebleu rouge-score` ({err})") from None
    hyps, refs = [str(h) for h in hypotheses], [str(r) for r in references]
    bleu = sacrebleu.corpus_bleu(hyps, [refs], lowercase=True)  # max n-gram order 4, 13a tokens
    scorer = rouge_scorer.RougeScorer(["rougeL"])  # lower-cases, keeps [a-z0-9] tokens
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]
    return {"BLEU-4": float(bleu.score), "ROUGE-L": 100 * sum(rouge) / max(len(rouge), 1)}


def score_captions(captions, references, seeds) -> dict:
    """Category / main-colour / both accuracy (%) on all objects and on the held-out pairs, BLEU-4, ROUGE-L."""
    if not (len(captions) == len(references) == len(seeds)) or not captions:
        raise ValueError(f"{len(captions)} captions, {len(references)} references and {len(seeds)} seeds: "
                         f"need one each, at least one")
    held = heldout_combinations()
    rows = []
    for cap, ref, seed in zip(captions, references, seeds):
        truth, got = true_attributes(int(seed), ref), parse_caption(cap)
        rows.append({"category": got["category"] == truth["category"], "colour": got["colour"] == truth["colour"],
                     "heldout": (truth["category"], truth["colour"]) in held})

    def accuracy(subset) -> dict:
        n = len(subset)
        pct = lambda k: round(100 * sum(r[k] for r in subset) / n, 2) if n else None  # noqa: E731
        both = round(100 * sum(r["category"] and r["colour"] for r in subset) / n, 2) if n else None
        return {"objects": n, "category_accuracy": pct("category"), "colour_accuracy": pct("colour"),
                "both_accuracy": both}

    return {**accuracy(rows), "heldout": accuracy([r for r in rows if r["heldout"]]),
            **{k: round(v, 2) for k, v in text_overlap(captions, references).items()}}


def evaluate_captioner(captioner, loaded: dict, limit: int | None = None, ablation: bool = True, blind: bool = True,
                       batch_size: int = 64, examples: int = 5, progress: bool = False) -> dict:
    """Every score of the module doc for the objects of a loaded token file (``tokens.load_tokens``).

    Returns ``{"captioner", "objects", "keep", "main", "blind", "keep_ablation": {k: scores}, "examples"}``."""
    from tqdm.auto import tqdm

    n = len(loaded["caption"]) if limit is None else min(int(limit), len(loaded["caption"]))
    if n < 1:
        raise ValueError("the token file holds no objects to caption")
    seq, refs, seeds = loaded["sequence"][:n], loaded["caption"][:n], loaded["seed"][:n]
    if not all(r.strip() for r in refs):
        raise ValueError("some objects of the token file have no reference caption: caption metrics need one each")
    runs = [("main", captioner.keep, False)] + ([("blind", captioner.keep, True)] if blind else [])
    if ablation:
        runs += [(k, k, False) for k in range(1, captioner.num_scales + 1) if k != captioner.keep]
    out = {"captioner": captioner.meta.get("llm_source", "?"), "objects": n, "keep": captioner.keep,
           "tokens_fed": captioner.num_tokens(), "scales": list(captioner.schedule), "keep_ablation": {}}
    for name, keep, zeroed in tqdm(runs, desc="captioning", disable=not progress):
        captions = captioner.caption(seq, keep=keep, blind=zeroed, batch_size=batch_size)
        scores = {**score_captions(captions, refs, seeds), "tokens_fed": captioner.num_tokens(keep)}
        if name == "main":
            out["main"] = scores
            out["examples"] = [{"reference": r, "caption": c} for r, c in zip(refs[:examples], captions[:examples])]
            if ablation:
                out["keep_ablation"][keep] = scores
        elif name == "blind":
            out["blind"] = scores
        else:
            out["keep_ablation"][keep] = scores
    out["keep_ablation"] = dict(sorted(out["keep_ablation"].items()))
    return out


def format_report(result: dict) -> str:
    """The numbers of ``evaluate_captioner`` as a small text table."""
    def line(name, s):
        h = s["heldout"]
        return (f"{name:<22}{s['tokens_fed']:>7}{s['category_accuracy']:>10.1f}{s['colour_accuracy']:>9.1f}"
                f"{s['both_accuracy']:>8.1f}   {_pct(h['category_accuracy'])}{_pct(h['colour_accuracy'])}"
                f"{s['BLEU-4']:>9.2f}{s['ROUGE-L']:>9.2f}")

    held = result["main"]["heldout"]["objects"]
    rows = [f"{result['objects']} objects ({held} of held-out (category, colour) pairs); captioner: "
            f"{result['captioner']}, trained on the first {result['keep']} of {len(result['scales'])} scales",
            f"{'':<22}{'tokens':>7}{'category':>10}{'colour':>9}{'both':>8}   {'held-out cat/col':<17}"
            f"{'BLEU-4':>9}{'ROUGE-L':>9}",
            line(f"keep={result['keep']} (SAR3D-LLM)", result["main"])]
    if "blind" in result:
        rows.append(line("blind (3D zeroed)", result["blind"]))
    for k, s in result["keep_ablation"].items():
        if k != result["keep"]:
            rows.append(line(f"fed {k} scale(s)", s))
    return "\n".join(rows)


def _pct(v) -> str:
    return f"{'-' if v is None else f'{v:.1f}':>8}"
