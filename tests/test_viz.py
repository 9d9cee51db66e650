"""viz/: overlays, patch-grid views and the contribution figure, checked on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from microclip.explain import Explanation
from viz.colormaps import clip_normalize, colorize, colorize_diverging
from viz.grid import grid_view, outline_patch, patch_at, patch_box
from viz.overlay import difference_map, difference_overlay, display_crop, mask_overlay, overlay_map, upsample
from viz.panels import RenderSettings, raw_values, render_difference, render_panels
from viz.plots import contribution_figure, topk_figure


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)


@pytest.fixture
def ramp() -> np.ndarray:
    return np.arange(16, dtype=np.float32).reshape(4, 4)


def make_explanation(ratio: float = 0.5) -> Explanation:
    rng = np.random.default_rng(1)
    return Explanation(
        classes=["a", "b", "c", "d"], ratio=ratio,
        logits_cls=np.array([30.0, 25.0, -5.0, 10.0]), logits_fg=np.array([20.0, 28.0, 12.0, -8.0]),
        soap_weights=np.full((2, 2), 0.2), null_weight=0.2, ncut_mask=np.eye(2, dtype=bool),
        cls_similarity=rng.random((2, 2)), patch_class_cosine=rng.random((2, 2, 4)), grid=(2, 2), image_size=32)


# ------------------------------------------------------------------ colours

def test_clip_normalize_clips_at_percentiles():
    values = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    unit = clip_normalize(values, 0, 75)  # 75th percentile = 3.0: the outlier saturates
    np.testing.assert_allclose(unit, [0.0, 1 / 3, 2 / 3, 1.0, 1.0], atol=1e-6)


def test_clip_normalize_constant_map_is_zero():
    assert not clip_normalize(np.full((3, 3), 7.0)).any()


def test_colorize_endpoints_are_the_colormap_ends():
    rgb = colorize(np.array([[0.0, 1.0]]), "jet")
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 2] > 100 and rgb[0, 0, 0] < 50  # jet starts blue (RGB order, not OpenCV's BGR)
    assert rgb[0, 1, 0] > 100 and rgb[0, 1, 2] < 50  # and ends red


def test_colorize_rejects_unknown_colormap():
    with pytest.raises(ValueError, match="unknown colormap"):
        colorize(np.zeros((2, 2)), "rainbow-unicorn")


def test_diverging_zero_is_white_and_signs_differ():
    rgb = colorize_diverging(np.array([-1.0, 0.0, 1.0]), limit=1.0)
    assert (rgb[1] > 240).all()
    assert rgb[0, 2] > rgb[0, 0] and rgb[2, 0] > rgb[2, 2]  # negative blue, positive red


# ------------------------------------------------------------------ overlays

def test_opacity_zero_returns_image_unchanged(image, ramp):
    np.testing.assert_array_equal(overlay_map(image, ramp, opacity=0.0), image)


def test_opacity_one_replaces_every_pixel_by_the_colormap(image):
    grid = np.array([[0.0, 1.0]])
    out = overlay_map(image, grid, opacity=1.0, cmap="viridis", interpolation="nearest")
    np.testing.assert_array_equal(out[:, :20], np.broadcast_to(colorize(np.zeros((1, 1)), "viridis"), (40, 20, 3)))


def test_threshold_keeps_pixels_below_it_unchanged(image):
    grid = np.array([[0.0, 0.0], [1.0, 1.0]])  # top half scales to 0, bottom half to 1
    out = overlay_map(image, grid, opacity=1.0, threshold=0.5, interpolation="nearest")
    np.testing.assert_array_equal(out[:20], image[:20])
    assert (out[20:] != image[20:]).any(axis=-1).all()


def test_nearest_upsample_of_one_hot_lights_its_block():
    grid = np.zeros((4, 4))
    grid[1, 2] = 1.0
    up = upsample(grid, (40, 40), "nearest")
    expected = np.zeros((40, 40))
    expected[10:20, 20:30] = 1.0
    np.testing.assert_array_equal(up, expected)


def test_bilinear_upsample_of_one_hot_peaks_in_its_block():
    grid = np.zeros((4, 4))
    grid[3, 0] = 1.0
    up = upsample(grid, (40, 40), "bilinear")
    row, col = np.unravel_index(np.argmax(up), up.shape)
    assert 30 <= row < 40 and 0 <= col < 10
    assert up[:20, 20:].max() == 0.0  # far blocks stay dark


def test_mask_overlay_colours_only_mask_pixels(image):
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[2, 1:3] = True
    out = mask_overlay(image, mask, opacity=0.5)
    inside = upsample(mask, (40, 40), "nearest") > 0.5
    np.testing.assert_array_equal(out[~inside], image[~inside])
    assert (out[inside] != image[inside]).any(axis=-1).mean() > 0.95


def test_difference_map_resamples_to_the_finer_grid():
    diff = difference_map(np.ones((2, 2)), np.zeros((4, 4)))
    assert diff.shape == (4, 4)
    np.testing.assert_allclose(diff, 1.0)


def test_difference_overlay_colours_by_magnitude(image):
    difference = np.array([[0.0, 1.0], [-1.0, 0.0]])
    out = difference_overlay(image, difference, opacity=1.0)
    np.testing.assert_array_equal(out[:20, :20], image[:20, :20])  # agreement: the image untouched
    np.testing.assert_array_equal(out[:20, 20:], np.broadcast_to(colorize_diverging(np.ones(1), 1.0), (20, 20, 3)))
    assert out[30, 5, 2] > out[30, 5, 0]  # negative: blue


def test_display_crop_matches_centre_crop_geometry():
    wide = Image.new("RGB", (60, 20))
    wide.paste((255, 0, 0), (0, 0, 20, 20))  # left third is red, cropped away by the centre crop
    wide.paste((0, 0, 255), (20, 0, 40, 20))
    crop = display_crop(wide, 40)
    assert crop.shape == (40, 40, 3)
    assert crop[:, 4:-4, 2].min() > 200 and crop[:, 4:-4, 0].max() < 60


# ------------------------------------------------------------------ patch grid

def test_grid_view_draws_one_block_per_patch(ramp):
    view = grid_view(ramp, cell=5, cmap="viridis")
    assert view.shape == (20, 20, 3)
    np.testing.assert_array_equal(view[5:10, 10:15], np.broadcast_to(view[5, 10], (5, 5, 3)))
    assert not np.array_equal(view[0, 0], view[-1, -1])


def test_grid_view_numbers_change_pixels_only_inside_blocks(ramp):
    plain = grid_view(ramp, cell=40)
    numbered = grid_view(ramp, cell=40, numbers=True, fmt=".0f")
    assert (plain != numbered).any()
    assert plain.shape == numbered.shape


def test_patch_at_inverts_patch_box():
    grid, size = (7, 7), (224, 224)
    for row, col in [(0, 0), (3, 5), (6, 6)]:
        x0, y0, x1, y1 = patch_box(row, col, size, grid)
        assert patch_at((x0 + x1) / 2, (y0 + y1) / 2, size, grid) == (row, col)
    assert patch_at(224, 224, size, grid) == (6, 6)  # clamped


def test_outline_patch_draws_on_the_patch_border_only(image):
    out = outline_patch(image, 1, 1, (4, 4), colour=(255, 0, 255), thickness=1)
    changed = (out != image).any(axis=-1)
    assert changed[10, 10:20].all() and not changed[:9].any() and not changed[21:].any()


# ------------------------------------------------------------------ panels

def test_render_panels_opacity_zero_shows_the_picture_and_frames_the_selected_patch(image):
    explanation = make_explanation()
    plain = render_panels(explanation, image, RenderSettings(opacity=0.0))
    np.testing.assert_array_equal(plain.soap, image)
    np.testing.assert_array_equal(plain.cls_similarity, image)
    assert plain.raw.shape == (40, 40, 3)  # 2×2 grid, 20-pixel blocks
    framed = render_panels(explanation, image, RenderSettings(opacity=0.0, selected=(1, 0)))
    changed = (framed.soap != image).any(axis=-1)
    assert changed[20:, :20].any() and not changed[:18].any() and not changed[:, 22:].any()


def test_raw_values_follow_the_fused_prediction():
    explanation = make_explanation(ratio=1.0)  # [CLS] only: class "a" wins
    np.testing.assert_array_equal(raw_values(explanation, "class_cosine"), explanation.patch_class_cosine[..., 0])
    explanation = explanation.with_ratio(0.0)  # [FG] only: class "b" wins
    np.testing.assert_array_equal(raw_values(explanation, "class_cosine"), explanation.patch_class_cosine[..., 1])


def test_render_difference_is_a_minus_b(image):
    a = make_explanation()
    b = Explanation(**{**a.__dict__, "soap_weights": np.array([[0.1, 0.2], [0.3, 0.4]])})
    panels = render_difference(a, b, image)
    np.testing.assert_allclose(panels.difference, [[0.1, 0.0], [-0.1, -0.2]], atol=1e-6)
    assert panels.overlay.shape == image.shape == panels.raw.shape


# ------------------------------------------------------------------ figures

def test_contribution_bars_equal_the_explanation_contributions():
    explanation = make_explanation(ratio=0.3)
    classes = [1, 0, 3]
    figure = contribution_figure(explanation, classes, marks={1: "predicted", 0: "runner-up"})
    cls_bars, fg_bars = figure.axes[0].containers[:2]
    for index, cls_rect, fg_rect in zip(classes, cls_bars.patches, fg_bars.patches):
        cls_part, fg_part = explanation.contributions(index)
        assert cls_rect.get_width() == pytest.approx(cls_part)
        assert fg_rect.get_width() == pytest.approx(fg_part)
    # class 3 has parts of opposite sign: the [FG] bar starts at zero instead of stacking
    assert fg_bars.patches[2].get_x() == pytest.approx(0.0)
    assert fg_bars.patches[0].get_x() == pytest.approx(explanation.contributions(1)[0])
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels[0] == "b  (predicted)"


def test_topk_figure_has_one_panel_per_branch():
    figure = topk_figure(make_explanation(), k=3)
    assert [axis.get_title() for axis in figure.axes] == ["fused", "[CLS] only", "[FG] only"]
    assert len(figure.axes[0].patches) == 3


def test_peer_panels_share_one_scale_whatever_the_units(image, ramp):
    from viz.peers import peer_panel

    panel = peer_panel(image, ramp, "viridis", opacity=1.0)
    assert np.array_equal(panel, peer_panel(image, 0.01 * ramp - 3.0, "viridis", opacity=1.0))  # min-max per map
    assert not np.array_equal(panel, peer_panel(image, ramp ** 2, "viridis", opacity=1.0))
    flat = np.unique(panel[:10, :10].reshape(-1, 3), axis=0)  # nearest: one colour per 10×10-pixel patch
    assert len(flat) == 1 and np.array_equal(flat[0], colorize(np.zeros((1, 1)), "viridis")[0, 0])
    assert np.array_equal(panel[-1, -1], colorize(np.ones((1, 1)), "viridis")[0, 0])


def test_outline_mask_draws_only_along_the_mask_borders(image):
    from viz.overlay import outline_mask

    mask = np.zeros((8, 8), bool)  # a ring at 1/5 of the 40-px image: outer and inner borders
    mask[2:7, 2:7] = True
    mask[4, 4] = False
    out = outline_mask(image, mask, colour=(255, 0, 255), thickness=1, halo=None)
    changed = (out != image).any(axis=-1)
    drawn = np.argwhere(changed)
    assert changed.any() and np.array_equal(out[changed], np.tile([255, 0, 255], (changed.sum(), 1)))
    assert drawn.min() >= 10 and drawn.max() <= 34  # nothing away from the ring
    assert changed[19:26, 19:26].any() and not changed[20:25, 20:25].any()  # the hole's border, on mask pixels
    assert not changed[:5].any() and not changed[:, :5].any()


def test_colorbar_runs_from_the_colormaps_low_end_to_its_high_end():
    from viz.peers import colorbar

    bar = colorbar("jet", width=200, height=40)
    assert bar.shape == (40, 200, 3)
    assert np.array_equal(bar[0, 0], colorize(np.zeros((1, 1)), "jet")[0, 0])
    assert np.array_equal(bar[0, -1], colorize(np.ones((1, 1)), "jet")[0, 0])
