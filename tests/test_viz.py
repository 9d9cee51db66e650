"""viz/: overlays, patch-grid views and the contribution figure, checked on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from microclip.explain import Explanation
from viz.colormaps import clip_normalize, colorize, colorize_diverging
from viz.overlay import difference_map, display_crop, overlay_map, upsample
from viz.panels import raw_values


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
        classes=["a", "b", "c", "d"],
        ratio=ratio,
        logits_cls=np.array([30.0, 25.0, -5.0, 10.0]),
        logits_fg=np.array([20.0, 28.0, 12.0, -8.0]),
        soap_weights=np.full((2, 2), 0.2),
        null_weight=0.2,
        ncut_mask=np.eye(2, dtype=bool),
        cls_similarity=rng.random((2, 2)),
        patch_class_cosine=rng.random((2, 2, 4)),
        grid=(2, 2),
        image_size=32,
    )


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


def test_difference_map_resamples_to_the_finer_grid():
    diff = difference_map(np.ones((2, 2)), np.zeros((4, 4)))
    assert diff.shape == (4, 4)
    np.testing.assert_allclose(diff, 1.0)


def test_display_crop_matches_centre_crop_geometry():
    wide = Image.new("RGB", (60, 20))
    wide.paste((255, 0, 0), (0, 0, 20, 20))  # left third is red, cropped away by the centre crop
    wide.paste((0, 0, 255), (20, 0, 40, 20))
    crop = display_crop(wide, 40)
    assert crop.shape == (40, 40, 3)
    assert crop[:, 4:-4, 2].min() > 200 and crop[:, 4:-4, 0].max() < 60


# ------------------------------------------------------------------ patch grid

# ------------------------------------------------------------------ panels


def test_raw_values_follow_the_fused_prediction():
    explanation = make_explanation(ratio=1.0)  # [CLS] only: class "a" wins
    np.testing.assert_array_equal(raw_values(explanation, "class_cosine"), explanation.patch_class_cosine[..., 0])
    explanation = explanation.with_ratio(0.0)  # [FG] only: class "b" wins
    np.testing.assert_array_equal(raw_values(explanation, "class_cosine"), explanation.patch_class_cosine[..., 1])


# ------------------------------------------------------------------ figures


def test_peer_panels_share_one_scale_whatever_the_units(image, ramp):
    from viz.peers import peer_panel

    panel = peer_panel(image, ramp, "viridis", opacity=1.0)
    assert np.array_equal(panel, peer_panel(image, 0.01 * ramp - 3.0, "viridis", opacity=1.0))  # min-max per map
    assert not np.array_equal(panel, peer_panel(image, ramp**2, "viridis", opacity=1.0))
    flat = np.unique(panel[:10, :10].reshape(-1, 3), axis=0)  # nearest: one colour per 10×10-pixel patch
    assert len(flat) == 1 and np.array_equal(flat[0], colorize(np.zeros((1, 1)), "viridis")[0, 0])
    assert np.array_equal(panel[-1, -1], colorize(np.ones((1, 1)), "viridis")[0, 0])


def test_a_signed_peer_panel_is_drawn_around_zero(image):
    from matplotlib import colormaps

    from viz.peers import peer_panel

    terms = np.array([[0.0, 2.0], [-1.0, -4.0]])  # 2×2 patches of 20×20 pixels; -4 is the largest |value|

    def by_hand(value: float, pixel: np.ndarray) -> np.ndarray:  # RdBu_r at 0.5 + v/(2·4), opacity |v|/4
        colour = np.round(np.array(colormaps["RdBu_r"](0.5 + value / 8.0)[:3]) * 255)
        return np.round((1 - abs(value) / 4) * pixel.astype(float) + abs(value) / 4 * colour)

    panel = peer_panel(image, terms, "viridis", opacity=1.0, signed=True)
    assert np.array_equal(panel[:20, :20], image[:20, :20])  # a patch that adds nothing leaves the picture
    for (row, col), value in np.ndenumerate(terms):
        y, x = 20 * row + 7, 20 * col + 11
        assert np.abs(panel[y, x] - by_hand(value, image[y, x])).max() <= 1, (row, col)
    assert np.array_equal(panel[30, 30], [5, 48, 97])  # full colour at the largest |value|: RdBu's darkest blue
    # The scale is the map's own (any positive multiple draws the same), and its sign is kept, unlike min-max.
    assert np.array_equal(panel, peer_panel(image, 10.0 * terms, "viridis", opacity=1.0, signed=True))
    assert not np.array_equal(panel, peer_panel(image, -terms, "viridis", opacity=1.0, signed=True))
    assert not np.array_equal(panel, peer_panel(image, terms, "viridis", opacity=1.0))


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

    both = colorbar("jet", width=200, height=40, signed=True)  # the diverging bar under it, as a panel draws it
    assert both.shape == (80, 200, 3) and np.array_equal(both[:40], bar)
    assert np.array_equal(both[40, 0], [5, 48, 97]) and np.array_equal(both[40, -1], [103, 0, 31])  # RdBu_r's ends
    assert (both[40, 99:101] >= 250).all()  # zero: the picture (white here) with nothing over it


def test_accuracy_figure_draws_the_validation_answer_where_the_run_logged_one():
    """The dashed validation line is the logged val_acc_fused, epoch by epoch; a run without one draws no such line."""
    from viz.plots import accuracy_figure

    rows = [
        {"epoch": 0, "test_acc_fused": 50.0, "test_acc_cls": 52.0, "test_acc_fg": 48.0, "val_acc_fused": 49.0},
        {"epoch": 1, "test_acc_fused": 60.0, "test_acc_cls": 58.0, "test_acc_fg": 55.0, "val_acc_fused": 61.5},
        {"epoch": 2, "test_acc_fused": 65.0, "test_acc_cls": 60.0, "test_acc_fg": 57.0, "val_acc_fused": 63.25},
    ]
    lines = {line.get_label(): line for line in accuracy_figure(rows).axes[0].lines}
    validation = [line for label, line in lines.items() if label.endswith("validation")]
    assert len(validation) == 1 and validation[0].get_linestyle() == "--"
    assert list(validation[0].get_xdata()) == [0, 1, 2]
    assert list(validation[0].get_ydata()) == [49.0, 61.5, 63.25]
    assert len(lines) == 4  # the three test branches beside it
    plain = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in rows]
    assert not any(line.get_label().endswith("validation") for line in accuracy_figure(plain).axes[0].lines)
