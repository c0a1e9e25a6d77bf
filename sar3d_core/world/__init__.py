"""The procedural world: a small, seeded stand-in for Objaverse that a learner may skip.

The paper trains and evaluates on G-Objaverse renders of Objaverse objects with 3DTopia
captions (Sec. 5.1). This package makes captioned objects from signed distance primitives
instead (``objects``: categories, colours, captions, splits; ``shapes``: the SDF geometry),
sphere-traces them (``sdf_render``) and writes them as the real data's chunk folders
(``dataset``), so that every stage trains and is measured on a CPU. All is a function of a seed.
"""
from .dataset import build_dataset
from .objects import (CATEGORIES, CATEGORY_WORDS, COLOURS, DETAIL_COLOURS, FINISHES, HELDOUT_PAIRS, HELDOUT_SHARE,
                      PATTERN_WEIGHTS, PATTERNS, SPLITS, heldout_combinations, make_object, objects_in_split,
                      prompt_forms, split_of, with_article)
from .sdf_render import MARCH_BOUND, render_sdf, sdf_normals, sphere_trace
from .shapes import EXTENT, FLOOR_Z, Part, ProceduralObject

__all__ = ["CATEGORIES", "CATEGORY_WORDS", "COLOURS", "DETAIL_COLOURS", "EXTENT", "FINISHES", "FLOOR_Z",
           "HELDOUT_PAIRS", "HELDOUT_SHARE", "MARCH_BOUND", "PATTERNS", "PATTERN_WEIGHTS", "SPLITS", "Part",
           "ProceduralObject", "build_dataset", "heldout_combinations", "make_object", "objects_in_split",
           "prompt_forms", "render_sdf", "sdf_normals", "sphere_trace", "split_of", "with_article"]
