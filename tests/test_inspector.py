"""The per-scale token inspector (Sec. 4.1, Alg. 1-2), driven from Python like a user would."""
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from sar3d_core.config import SAR3DConfig
from sar3d_core.inspector import (GENERATOR_MISSING, TokenInspector, code_colors, default_cameras, distinct_codes,
                                  edit_scale, load_object, static_figure, token_table_html)
from sar3d_core.quantizer import tokens_to_sequence
from sar3d_core.tokens import save_tokens
from sar3d_core.vqvae import SAR3DVQVAE


def small_model() -> SAR3DVQVAE:
    """Random weights: 32 px views, latent 3 x 8 x 4 x 4, scales 1-2-4, 64 codes."""
    torch.manual_seed(0)
    cfg = SAR3DConfig(name="test", image_size=32, latent_size=4, scales=(1, 2, 4), codebook_size=64,
                      extra={"encoder": {"base_channels": 8, "max_channels": 8, "fused_channels": 8},
                             "triplane": {"feature_channels": 8, "decoder_channels": (8, 8, 8), "mlp_hidden": 8,
                                          "num_samples": 8, "density_bias": 1.0}})
    return SAR3DVQVAE(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def app(model):
    return TokenInspector(model, "proc:3", c_V25=default_cameras(2), size=16, show_3d=False)


def test_load_object_matches_the_quantizer(model):
    insp = load_object(model, "proc:3")
    assert [tuple(t.shape) for t in insp.tokens] == [(1, 3, 1, 1), (1, 3, 2, 2), (1, 3, 4, 4)]
    assert insp.residual_of == "f" and len(insp.residual_norms) == 3
    # the residual left after scale k, computed a second way: f_hat_k from Alg. 2 against f from the encoder
    from sar3d_core.data import load_views

    mv = load_views("proc:3", num_views=6, size=32)
    with torch.no_grad():
        f = model.encoder(mv.encoder_input()[None])
        for k in (1, 2, 3):
            f_hat_k = model.quantizer.tokens_to_fhat(insp.tokens, k)
            assert insp.residual_norms[k - 1] == pytest.approx(float((f - f_hat_k).norm() / f.norm()), rel=1e-4)
    assert distinct_codes(insp.tokens) == [len(set(t.flatten().tolist())) for t in insp.tokens]


def test_slider_changes_scale_and_decoded_images(app):
    app.slider.value = 1
    assert app.k == 1
    one_maps, one_png, one_rgb = app.token_maps.value, app.decoded.value, app.rgb.clone()
    assert one_maps.count("<td") == 3 * 1  # three 1x1 maps
    app.slider.value = 3
    assert app.k == 3 and app.token_maps.value.count("<td") == 3 * 16
    assert app.decoded.value != one_png and not torch.equal(app.rgb, one_rgb)
    # the ids shown are the tokens of scale 3, plane by plane, row by row
    ids = app.insp.tokens[2][0].flatten().tolist()
    cells = re.findall(r"<td [^>]*>(\d+)</td>", app.token_maps.value)
    assert [int(c) for c in cells] == ids
    assert "font-weight:bold" in app.info.value.split("<tr")[4]  # row of k = 3 highlighted (header is row 1)
    # the decoded image is the object rendered from scales 1..3 = all scales
    from sar3d_core.tokens import decode_views

    full = decode_views(app.model, app.insp.tokens, app.c, 16)["rgb"].clamp(0, 1)
    assert torch.allclose(app.rgb, full, atol=1e-5)


def test_edit_changes_render_and_keeps_original(app, model):
    app.slider.value = 1
    before_tokens = [t.clone() for t in app.insp.tokens]
    before_png = app.original_full.value
    app.edit_mode.value, app.edit_seed.value = "random", 5
    app.edit_button.click()
    assert app.edited_tokens is not None and "scale 1" in app.edit_note.value
    assert not torch.equal(app.edited_tokens[0], before_tokens[0])
    assert all(torch.equal(a, b) for a, b in zip(app.insp.tokens, before_tokens))  # original untouched
    assert app.original_full.value == before_png and app.edited.value not in (b"", before_png)
    assert (app.edited_rgb - app._rendered[3]).abs().max() > 1e-4  # the decoded render changed
    # another object's scale 2: exactly its tokens at scale 2, ours elsewhere
    app.slider.value = 2
    assert app.edit("object", donor="proc:8")
    donor = load_object(model, "proc:8").tokens
    assert torch.equal(app.edited_tokens[1], donor[1])
    assert torch.equal(app.edited_tokens[0], before_tokens[0]) and torch.equal(app.edited_tokens[2], before_tokens[2])


def test_edit_scale_is_seeded_and_pure():
    tokens = [torch.zeros(1, 3, s, s, dtype=torch.long) for s in (1, 2, 4)]
    a, b = edit_scale(tokens, 3, 64, seed=1), edit_scale(tokens, 3, 64, seed=1)
    assert torch.equal(a[2], b[2]) and not torch.equal(a[2], edit_scale(tokens, 3, 64, seed=2)[2])
    assert all(int(t.abs().sum()) == 0 for t in tokens) and a[2].max() < 64
    with pytest.raises(ValueError, match="shape"):
        edit_scale(tokens, 2, 64, donor=[t[..., :1, :1] for t in tokens])


def test_bad_inputs_show_a_message(app, model, tmp_path):
    current = app.insp.source
    assert not app.load("data_samples/meshes/no_such_mesh.glb")
    assert "no such file" in app.message.value and "#b00020" in app.message.value
    other = SAR3DConfig(name="test", image_size=32, latent_size=4, scales=(1, 4), codebook_size=64)
    path = save_tokens(tmp_path / "other.npz", torch.zeros(1, 3 * (1 + 16), dtype=torch.long), other,
                       ["x"], [""], [-1])
    assert not app.load(str(path))
    assert "scales (1, 4)" in app.message.value and "encode with the same checkpoint" in app.message.value
    assert app.insp.source == current  # the shown object is kept
    assert not app.edit("object", donor="proc:notanumber") and "edit failed" in app.message.value
    # resampling without a generator: disabled, labelled, and a message if called anyway
    assert app.resample_button.disabled and GENERATOR_MISSING in app.resample_button.description
    assert not app.resample() and GENERATOR_MISSING in app.message.value


def test_token_file_and_resample_hook(model, tmp_path):
    insp = load_object(model, "proc:3")
    path = save_tokens(tmp_path / "t.npz", tokens_to_sequence(insp.tokens), model.cfg, ["proc:3"], ["cap"], [3])
    seen = []

    def resample_fn(tokens, k, seed):
        seen.append((k, seed))
        return edit_scale(tokens, k, model.cfg.codebook_size, seed=seed + 100)

    app = TokenInspector(model, f"{path}#0", c_V25=default_cameras(1), size=8, resample_fn=resample_fn, show_3d=False)
    assert app.insp.residual_of == "f_hat_K" and app.insp.residual_norms[-1] == pytest.approx(0.0, abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(app.insp.tokens, insp.tokens))
    assert not app.resample_button.disabled and app.resample(seed=4) and seen == [(3, 4)]


def test_3d_view_and_static_figure(model):
    app = TokenInspector(model, "proc:3", c_V25=default_cameras(1), size=8, show_3d=True, mesh_resolution=12)
    assert app.plot is not None and len(app.plot.objects) == 1 and "3D, scales 1..3" in app.note3d.value
    n_before = app.note3d.value
    app.slider.value = 1
    assert len(app.plot.objects) == 1 and app.note3d.value != n_before
    fig = app.show(interactive=False)  # the fallback where widgets cannot render
    assert fig.axes and len(fig.axes) == 3 * (3 + 1)
    fig = static_figure(model, app.insp, default_cameras(2), size=8)
    assert len(fig.axes) == 3 * (3 + 2) and "k=3" in fig.axes[2 * 5].get_ylabel()
    # ids are written on the small maps: the 2x2 maps of scale 2 carry their 4 ids
    texts = [t.get_text() for t in fig.axes[1 * 5].texts]
    assert texts == [str(v) for v in app.insp.tokens[1][0, 0].flatten().tolist()]


def test_code_colours_and_table():
    ids = np.arange(64)
    rgb = code_colors(ids)
    assert rgb.shape == (64, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.abs(np.diff(rgb, axis=0)).sum(1).min() > 0.05  # neighbouring ids look different
    html = token_table_html(torch.arange(12).reshape(1, 3, 2, 2))
    assert html.count("<table") == 3 and "plane yz, row 1, col 0: code 10" in html


def test_3d_view_is_a_mesh_where_the_field_has_a_surface():
    import k3d

    from sar3d_core.inspector import k3d_objects
    from sar3d_core.meshing import field_grid

    model = small_model()
    insp = load_object(model, "proc:3")
    field, delta = model.field, 2 * model.field.bound / model.triplane_settings.num_samples
    with torch.no_grad():
        sigma, _ = field_grid(field, model.decode_tokens(insp.tokens), 12)
    # move the density bias so that the median grid point sits at alpha = 1/2 (the surface level)
    raw = torch.log(torch.expm1(sigma / field.density_scale)) - field.density_bias  # softplus^-1
    field.density_bias = float(np.log(np.expm1(np.log(2) / (field.density_scale * delta))) - raw.median())
    objects, note = k3d_objects(model, insp.tokens, 3, resolution=12)
    assert note.startswith("mesh, ") and isinstance(objects[0], k3d.objects.Mesh)
    assert len(objects[0].indices) > 0 and len(objects[0].colors) == len(objects[0].vertices)


def test_unexpected_errors_become_messages_too(model, tmp_path):
    app = TokenInspector(model, "proc:3", c_V25=default_cameras(1), size=8, show_3d=False)
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"not a mesh at all")
    assert not app.load(str(broken)) and "could not load" in app.message.value
    assert app.insp.source == "proc:3"
    app.load("proc:nope")
    assert app.edit("random", seed=1) and "#b00020" not in app.message.value  # a good edit clears the error


def test_edit_note_keeps_saying_what_is_shown(model):
    app = TokenInspector(model, "proc:3", c_V25=default_cameras(1), size=8, show_3d=False)
    app.slider.value = 2
    assert app.edit("random", seed=3) and "scale 2: random codes, seed 3" in app.edit_note.value
    app.slider.value = 1
    assert "scale k = 1" in app.edit_note.value and "scale 2: random codes" in app.edit_note.value
    assert app.load("proc:4") and app.edited_tokens is None and app.edited.value == b""


def test_the_shipped_text_generator_resamples_scales_k_to_K_in_the_app():
    """The hook connected to the shipped next-scale generator: scales 1..k-1 stay, k..K are drawn
    again for the prompt, and the app shows the result beside the original."""
    from sar3d_core.generate import Pipeline

    gen = Pipeline.from_pretrained("data_samples/ar_text_tiny")
    fn = gen.resample_fn("a red chair", cfg=4.0, top_k=10, top_p=0.5)
    app = TokenInspector(gen.vqvae, "proc:3", c_V25=default_cameras(1), size=16, resample_fn=fn, show_3d=False)
    K = len(app.insp.tokens)
    app.slider.value = 3
    assert not app.resample_button.disabled and app.resample(seed=1)
    assert "scales 3..6 resampled" in app.edit_what or "scales 3..6 resampled" in app.message.value
    out = fn([t.clone() for t in app.insp.tokens], 3, 1)
    assert all(torch.equal(a, b) for a, b in zip(out[:2], app.insp.tokens[:2]))  # kept
    assert not all(torch.equal(a, b) for a, b in zip(out[2:], app.insp.tokens[2:]))  # redrawn
    assert len(out) == K
    with pytest.raises(ValueError, match="between 1 and"):
        fn(app.insp.tokens, 0, 0)
