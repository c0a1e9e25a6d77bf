import pytest

from sar3d_core.config import SAR3DConfig, tokens_per_scale, total_tokens, truncated_tokens

PAPER = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]


def test_paper_token_arithmetic():
    assert tokens_per_scale(PAPER) == [3, 12, 27, 48, 75, 108, 192, 300, 507, 768]
    assert total_tokens(PAPER) == 2040
    assert total_tokens(PAPER, planes=1) == 680
    assert truncated_tokens(PAPER) == (765, 0.375)


def test_token_arithmetic_matches_a_direct_count():
    # count the cells of every plane of every scale one by one
    for schedule in ([1, 2, 4], [(1, 2), (3, 3), (4, 8)], PAPER):
        cells = [sum(1 for _plane in range(3) for _r in range(h) for _c in range(w))
                 for h, w in ((s, s) if isinstance(s, int) else s for s in schedule)]
        assert tokens_per_scale(schedule) == cells
        kept = sum(cells[:2])
        assert truncated_tokens(schedule, keep=2) == (kept, kept / sum(cells))


def test_presets():
    paper, tiny = SAR3DConfig.paper(), SAR3DConfig.tiny()
    assert paper.total_tokens() == 2040 and paper.codebook_size == 16384 and paper.latent_channels == 8
    assert paper.ar_width == 64 * paper.ar_depth_image and paper.image_size == 256
    assert tiny.scales[-1] == tiny.latent_size and tiny.total_tokens() < paper.total_tokens()
    assert SAR3DConfig.preset("tiny") == tiny


def test_config_round_trip(tmp_path):
    cfg = SAR3DConfig.paper()
    cfg.save(tmp_path / "config.json")
    assert SAR3DConfig.load(tmp_path / "config.json") == cfg


@pytest.mark.parametrize("bad", [[], [0, 2], [(1, 2, 3)]])
def test_bad_schedules(bad):
    with pytest.raises(ValueError):
        tokens_per_scale(bad)


def test_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        SAR3DConfig.preset("huge")
    with pytest.raises(ValueError, match="latent size"):
        SAR3DConfig(scales=(1, 2, 4), latent_size=8)
    with pytest.raises(ValueError, match="unknown fields"):
        SAR3DConfig.from_dict({"name": "x", "bogus": 1})
    with pytest.raises(ValueError, match="keep"):
        truncated_tokens(PAPER, keep=11)
