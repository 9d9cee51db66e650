"""The light HTML views (viz/html.py): layers, colour bars and the contribution chart, checked against
direct computations (OpenCV colormaps, NumPy percentiles, the logits themselves)."""

from __future__ import annotations

import base64
import io
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from viz import html as views


def decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_a_patch_layer_is_the_colormap_of_the_clipped_values_with_the_threshold_as_alpha():
    rng = np.random.default_rng(0)
    values = rng.random((5, 7))
    layer = views.value_layer(values, "jet", (10.0, 90.0), opacity=0.6, threshold=0.3, smooth=False)
    low, high = np.percentile(values, [10, 90])
    unit = np.clip((values - low) / (high - low), 0, 1)
    expected_rgb = cv2.applyColorMap(np.round(unit * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    np.testing.assert_array_equal(layer[..., :3], expected_rgb)
    np.testing.assert_array_equal(layer[..., 3], np.where(unit >= 0.3, 153, 0))
    smooth = views.value_layer(values, "jet", (0.0, 100.0), 0.5, 0.0, smooth=True)
    assert smooth.shape[:2] == (5 * views.SMOOTH_PIXELS_PER_PATCH, 7 * views.SMOOTH_PIXELS_PER_PATCH)
    np.testing.assert_array_equal(decode(views.png_uri(layer)), layer)  # PNG is lossless, RGBA kept


def test_every_map_figure_has_a_colour_bar_labelled_with_its_real_range():
    values = np.array([[0.00002, 0.1], [0.3, 0.05]])
    html = views.value_figure("SOAP", values, views.ColourScale("viridis"), 0.5, 0.5, selected=(1, 0))
    assert "mc-bar" in html and "2.00e-05" in html and "0.3000" in html  # the ends of the scale, honestly
    assert f"below {views.num(0.00002 + 0.5 * (0.3 - 0.00002))} transparent" in html
    assert "left:0.000%;top:50.000%;width:50.000%;height:50.000%" in html  # the selected patch's frame
    mask = views.mask_figure("NCut", np.array([[True, False], [False, False]]), 0.5, None)
    assert "foreground: 1 of 4 patches (25%)" in mask


def test_raw_grid_numbers_never_print_a_nonzero_value_as_zero():
    values = np.array([[2.65e-5, 0.164], [0.0, 0.5]])
    html = views.raw_figure("raw", values, views.ColourScale("jet"), True, ".3f", None)
    cells = re.findall(r"<span style='color:#[0f]{3}'>([^<]+)</span>", html)
    assert cells == ["3e-05", "0.164", "0.000", "0.500"]


def test_contribution_chart_prints_each_part_and_the_margin_to_the_runner_up():
    rows = [
        views.ContributionRow("finch", "predicted", 30.576, 31.194),
        views.ContributionRow("wren <b>", "runner-up", 28.446, 39.651 - 7.0),
        views.ContributionRow("tit", "", 24.0, -3.5),
    ]
    html = views.contribution_html(rows, 0.5)
    margin = rows[0].total - rows[1].total
    assert f"Margin to the runner-up (wren &lt;b&gt;): {margin:.3f} logits" in html  # names escaped
    assert f"[CLS] {rows[0].cls_part - rows[1].cls_part:+.3f} + [FG] {rows[0].fg_part - rows[1].fg_part:+.3f}" in html
    for row in rows:
        assert f"<b>{row.total:.3f}</b>" in html and f"{row.fg_part:.3f}" in html
    assert "_c" not in html and "[CLS] part = ρ·100·cos(g, class)" in html
    # A negative part is drawn to the left of the zero line: its segment ends where the line is.
    zero = float(re.search(r"left:([\d.]+)%;width:1px", html)[1])
    starts = [
        float(x)
        for x in re.findall(
            r"title='\[FG\] part -3.500' style='position:absolute;top:0;bottom:0;"
            r"left:([\d.]+)%;width:([\d.]+)%",
            html,
        )[0]
    ]
    assert starts[0] + starts[1] == pytest.approx(zero, abs=0.02)


def test_every_map_says_how_its_colours_are_scaled_next_to_it():
    values = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert "colours: this map&#x27;s own min–max" in views.value_figure(
        "m", values, views.ColourScale("viridis", (0.0, 100.0)), 0.5, 0.0, None
    )
    assert "own 5th–95th percentiles (clipped outside)" in views.value_figure(
        "m", values, views.ColourScale("viridis", (5.0, 95.0)), 0.5, 0.0, None
    )
    raw = views.raw_figure("d", values - 0.25, views.ColourScale("viridis"), False, ".2f", None, diverging_limit=0.15)
    assert "largest |value|, 0 in the middle" in raw


def test_one_number_format_never_prints_a_small_weight_as_zero():
    assert views.num(2.46e-05) == "2.46e-05" and views.num(0.0) == "0.0000" and views.num(None) == "–"
    assert views.num(0.5, 2) == "0.50" and views.num(0.004, 2) == "4.00e-03"
    assert views.cell_text(2.65e-5, ".3f") == "3e-05" and views.cell_text(0.1644, ".3f") == "0.164"
