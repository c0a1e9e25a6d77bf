"""The small ar_eval helpers the tutorials call: accuracy of multi-view renders, diversity of samples."""
import pytest
import torch

from sar3d_core.ar_eval import (EVAL_AZIMUTHS, attribute_accuracy_of_views, ground_truth_renders, labels_of_record,
                                sample_diversity)
from sar3d_core.featnet import attribute_accuracy, load_default
from sar3d_core.world import objects_in_split


@pytest.fixture(scope="module")
def renders():
    records = [o.to_dict() for o in objects_in_split("test", 4)]
    images = ground_truth_renders(records)  # (N * 2, 3, H, W), object-major
    return records, images.reshape(len(records), len(EVAL_AZIMUTHS), *images.shape[1:])


def test_accuracy_of_views_repeats_each_objects_labels_over_its_views(renders):
    records, views = renders
    net = load_default()
    got = attribute_accuracy_of_views(net, views, records)
    labels = [labels_of_record(r) for r in records for _ in EVAL_AZIMUTHS]
    assert got == attribute_accuracy(net, views.flatten(0, 1), labels)
    assert {"category", "colour"} <= set(got)
    # plain label dicts (short prompts) judge the same heads
    plain = [{"category": r["category"], "colour": r["attributes"]["colour"]} for r in records]
    short = attribute_accuracy_of_views(net, views, plain)
    assert set(short) == {"category", "colour"}
    assert short["category"] == got["category"] and short["colour"] == got["colour"]
    # another object's labels on the same views: the accuracy can only follow the labels
    shifted = attribute_accuracy_of_views(net, views, records[1:] + records[:1])
    assert shifted["category"] != got["category"] or shifted["colour"] != got["colour"]


@pytest.mark.parametrize("views, records, match", [
    (torch.zeros(2, 3, 8, 8), [{"category": "mug"}] * 2, r"expected \(objects, views, 3, H, W\)"),
    (torch.zeros(2, 2, 3, 8, 8), [{"category": "mug"}] * 3, "2 objects of views but 3 records"),
])
def test_accuracy_of_views_bad_inputs(views, records, match):
    with pytest.raises(ValueError, match=match) as info:
        attribute_accuracy_of_views(None, views, records)
    assert "\n" not in str(info.value)


def test_sample_diversity_is_the_mean_distance_over_seed_pairs_and_conditions():
    F = torch.zeros(3, 2, 2)  # 3 seeds, 2 conditions, 2-d features
    F[1, 0] = torch.tensor([3.0, 4.0])  # condition 0, seed 1: 5 away from seeds 0 and 2
    F[2, 1] = torch.tensor([0.0, 1.0])  # condition 1, seed 2: 1 away from seeds 0 and 1
    # pairs (0, 1), (0, 2), (1, 2) x conditions: distances 5, 0, 5 and 0, 1, 1
    assert sample_diversity(F) == pytest.approx((5 + 0 + 5 + 0 + 1 + 1) / 6)
    assert sample_diversity(torch.ones(4, 3, 8)) == 0.0  # every seed the same object
    loop = torch.stack([(F[a] - F[b]).norm(dim=-1).mean() for a in range(3) for b in range(a + 1, 3)]).mean()
    assert sample_diversity(F) == pytest.approx(float(loop))


@pytest.mark.parametrize("shape", [(1, 4, 8), (3, 8), (2, 0, 8)])
def test_sample_diversity_needs_two_seeds(shape):
    with pytest.raises(ValueError, match="expected \\(seeds >= 2, conditions, D\\)") as info:
        sample_diversity(torch.zeros(shape))
    assert "\n" not in str(info.value)
