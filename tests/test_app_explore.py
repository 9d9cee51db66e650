"""The app over HTTP: launch it on localhost and drive the Explore, Compare and Models endpoints
with ``gradio_client``, including bad uploads. Nothing under test is mocked."""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import socket
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, draw_sample
from PIL import Image, ImageOps

from microclip.checkpoint import CheckpointMeta, read_adapted, save_adapted
from microclip.model import MicroCLIP
from studio.explore import PHOTO_SIZE
from studio.registry import ModelRegistry, default_registry
from ui.app import build_demo, launch_kwargs
from viz.overlay import display_crop

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402

ADAPTED, ZERO_SHOT = "adapted", "zero-shot"
DESCRIPTIONS = {name: [f"a {name} on a dark noisy background.", f"a picture showing one {name}."] for name in CLASSES}
DISPLAY = dict(opacity=0.5, cmap="jet", clip_lo=0, clip_hi=100, threshold=0, raw_map="SOAP weight", numbers=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """An adapted checkpoint on the tiny random ViT, and the images the tests upload."""
    folder = tmp_path_factory.mktemp("app")
    model, _, _ = MicroCLIP.build(f"local-dir:{tiny_model_dir}", None, CLASSES, descriptions=DESCRIPTIONS)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.trainable_parameters().values():
            param.add_(0.05 * torch.randn_like(param))
    meta = CheckpointMeta(
        model.base,
        CLASSES,
        method=model.config.to_dict(),
        training={"dataset": "shapes", "command": "test"},
        metrics={"acc": 42.0},
        templates=["a photo of a {}."],
        descriptions=DESCRIPTIONS,
        # a made-up shift every image's [FG] took on (a real run measures it: tests/test_drift.py), toward class 1
        drift={"fg_shift": (0.3 * model.heads.w_star_hat()[1]).tolist(), "images": 12},
    )
    paths = {"checkpoint": save_adapted(folder / "adapted.safetensors", model.adapted_state(), meta)}
    rng = np.random.default_rng(0)
    paths["image"] = folder / "square.png"
    draw_sample(0, rng, size=48).save(paths["image"])
    return paths | bad_files(folder, rng)


def bad_files(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """Files a user might upload: unreadable ones and awkward-but-valid ones."""
    paths = {
        name: folder / name
        for name in ("text.jpg", "truncated.png", "bomb.png", "cmyk.jpg", "gray16.png", "palette.png", "exif.jpg")
    }
    paths["text.jpg"].write_text("this is not an image")
    png = io.BytesIO()
    draw_sample(1, rng, size=48).save(png, format="PNG")
    paths["truncated.png"].write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    paths["bomb.png"].write_bytes(png_header(50_000, 50_000))
    Image.new("CMYK", (40, 40), (0, 200, 200, 0)).save(paths["cmyk.jpg"])
    Image.fromarray((rng.random((40, 40)) * 65535).astype(np.uint16)).save(paths["gray16.png"])
    draw_sample(2, rng, size=48).convert("P").save(paths["palette.png"])
    portrait = np.zeros((30, 60, 3), np.uint8)
    portrait[:, :30] = (250, 0, 0)  # stored landscape: red left half, blue right half
    portrait[:, 30:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(portrait).save(paths["exif.jpg"], exif=exif, quality=95)
    return paths


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def registry(files, tiny_model_dir) -> ModelRegistry:
    registry = ModelRegistry("cpu")
    registry.add_checkpoint(files["checkpoint"], ADAPTED, default=True)
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, ZERO_SHOT, descriptions=DESCRIPTIONS)
    return registry


@pytest.fixture(scope="module")
def client(registry):
    demo = build_demo(registry)
    demo.launch(**launch_kwargs("127.0.0.1", free_port()), prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(demo.local_url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def forward_calls(registry) -> list[int]:
    """Counts forward passes of the adapted model's visual tower (one element per pass)."""
    calls: list[int] = []
    registry.get(ADAPTED).model.backbone.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def explore(client, image: Path, classes: str = "", **display):
    return client.predict(
        handle_file(str(image)), ADAPTED, classes, None, 0.5, *{**DISPLAY, **display}.values(), api_name="/explore"
    )


def data_images(html: str) -> list[np.ndarray]:
    """Every image embedded in an HTML view (data URIs), decoded, in document order."""
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
        for data in re.findall(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", html)
    ]


def figures(html: str) -> list[str]:
    """The captions of the figures in an HTML map view."""
    return re.findall(r"<figcaption>(.*?)</figcaption>", html)


def confidences(label: dict) -> dict[str, float]:
    """Class → probability from a Label output."""
    return {row["label"]: row["confidence"] for row in label["confidences"]}


# ------------------------------------------------------------------ explore and friends


def test_every_action_is_a_named_endpoint(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {
        "/explore",
        "/rerender",
        "/fusion",
        "/patch_info",
        "/compare",
        "/model_info",
        "/upload_model",
        "/model_classes",
        "/list_models",
        "/explore_download",
    } <= names
    # Clients pass the display settings by name: each endpoint that takes them names them (ui.explore.takes_display).
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = {name: [p["parameter_name"] for p in endpoints[name]["parameters"]] for name in endpoints}
    display = list(DISPLAY)
    assert parameters["/explore"] == ["image", "model_name", "class_names", "descriptions_json", "ratio", *display]
    assert parameters["/rerender"] == display and parameters["/fusion"] == ["ratio", *display]
    assert parameters["/patch_info"] == ["row", "col", *display]
    assert parameters["/explore_download"] == display


def test_explore_returns_topk_for_each_branch_and_maps(client, files, forward_calls):
    before = len(forward_calls)
    summary, fused, cls_only, fg_only, plot, descriptions, *maps, patch = explore(client, files["image"])
    assert len(forward_calls) == before + 1  # one forward pass makes everything
    assert "Prediction:" in summary and "Null token" in summary
    for label in (fused, cls_only, fg_only):
        assert set(confidences(label)) == set(CLASSES)
        assert sum(confidences(label).values()) == pytest.approx(1.0, abs=1e-4)
    assert "Margin to the runner-up" in plot and "[CLS] part" in plot  # drawn by the browser from the numbers
    assert "Predicted:" in descriptions and "noisy background" in descriptions  # the checkpoint's descriptions
    overlays, raw = maps
    assert figures(overlays) == ["SOAP attention", "NCut foreground", "Similarity to [CLS]"]
    photo, soap, ncut, cls_map = data_images(overlays)  # one photo, sent once, and a light layer per map
    assert photo.shape == (PHOTO_SIZE, PHOTO_SIZE, 3)
    assert ncut.shape == (4, 4, 4)  # the mask at the tiny model's 4×4 patch grid, RGBA
    assert soap.shape[:2] == cls_map.shape[:2] and soap.shape[0] % 4 == 0 and soap.shape[2] == 4
    assert overlays.count("mc-bar") == 2 and "of 16 patches" in overlays  # colour bars, and the mask's legend
    (grid,) = data_images(raw)
    assert grid.shape[:2] == (4, 4)


def test_rerender_fusion_and_patch_info_need_no_forward_pass(client, files, forward_calls):
    summary, fused, cls_only, fg_only, *_ = explore(client, files["image"])
    before = len(forward_calls)
    views = client.predict(0.9, "viridis", 5, 95, 0.3, "cosine to [CLS]", True, api_name="/rerender")
    assert len(views) == 2 and figures(views[1]) == ["Raw patch grid: cosine to [CLS]"]
    assert len(re.findall(r"<span style='color:#[0f]{3}'>[-+.\de]+</span>", views[1])) == 16  # the numbers
    cls_top = fused_top = None
    for ratio in (1.0, 0.0):  # ρ = 1: fused is [CLS] only; ρ = 0: fused is [FG] only
        out = client.predict(ratio, *DISPLAY.values(), api_name="/fusion")
        fused_top = out[1]["label"]
        assert f"ρ = {ratio:.2f}" in out[0]
        if ratio == 1.0:
            cls_top = fused_top
    assert cls_top == cls_only["label"] and fused_top == fg_only["label"]
    text, *framed = client.predict(1, 2, *DISPLAY.values(), api_name="/patch_info")
    assert "row 1, col 2" in text and "SOAP weight" in text and "cosine to `[CLS]`" in text
    assert len(framed) == 2 and all(view.count("mc-sel") == view.count("mc-stage") > 0 for view in framed)
    assert len(forward_calls) == before


def test_download_gives_the_maps_as_shown_and_every_number(client, files, registry):
    from microclip.data.images import load_image
    from microclip.explain import explain_image

    explore(client, files["image"])
    zipped = client.predict(*{**DISPLAY, "threshold": 0.999}.values(), api_name="/explore_download")
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == sorted(
            [
                "photo.png",
                "soap.png",
                "ncut.png",
                "cls_similarity.png",
                "summary.md",
                "explanation.json",
                "settings.json",
            ]
        )
        png = {name: np.asarray(Image.open(io.BytesIO(zf.read(f"{name}.png")))) for name in ("photo", "soap", "ncut")}
        numbers, settings = json.loads(zf.read("explanation.json")), json.loads(zf.read("settings.json"))
        assert "Prediction:" in zf.read("summary.md").decode()
    expected = explain_image(registry.get(ADAPTED).model, load_image(files["image"]), 0.5)
    assert numbers["prediction"]["fused"] == expected.classes[expected.prediction("fused")]
    assert np.allclose(numbers["soap_weights"], expected.soap_weights, atol=1e-5)
    assert settings["model"] == ADAPTED and settings["display"]["threshold"] == 0.999
    cell = PHOTO_SIZE // 4  # the tiny model's 4×4 grid over the photo

    def on_grid(mask: np.ndarray) -> np.ndarray:
        return np.kron(np.asarray(mask, dtype=np.uint8), np.ones((cell, cell), np.uint8)).astype(bool)

    # the NCut picture is the photo tinted exactly on the mask's patches
    tinted = (png["ncut"] != png["photo"]).any(axis=2)
    mask = on_grid(expected.ncut_mask)
    assert not (tinted & ~mask).any() and tinted[mask].mean() > 0.99
    # at threshold 0.999 only the top of SOAP's map is coloured: inside the patch with the largest weight
    coloured = (png["soap"] != png["photo"]).any(axis=2)
    top = np.zeros(expected.grid, bool)
    top[np.unravel_index(expected.soap_weights.argmax(), expected.grid)] = True
    assert coloured.any() and not (coloured & ~on_grid(top)).any()
    # opacity 0 draws no map at all
    clear = client.predict(*{**DISPLAY, "opacity": 0.0}.values(), api_name="/explore_download")
    with zipfile.ZipFile(clear) as zf:
        assert zf.read("soap.png") == zf.read("photo.png") == zf.read("cls_similarity.png")


def test_download_before_any_explanation_says_what_to_do(client):
    fresh = gradio_client.Client(client.src, verbose=False)  # a new session: nothing explained yet
    with pytest.raises(AppError, match="Explain an image first"):
        fresh.predict(*DISPLAY.values(), api_name="/explore_download")


def test_patch_outside_the_grid_is_a_clear_error(client, files):
    explore(client, files["image"])
    with pytest.raises(AppError, match="outside the 4×4 patch grid"):
        client.predict(9, 0, *DISPLAY.values(), api_name="/patch_info")


def test_typed_class_names_replace_the_model_classes(client, files):
    _, fused, *_ = explore(client, files["image"], classes="cat, dog\nbird")
    assert set(confidences(fused)) == {"cat", "dog", "bird"}


def test_one_class_label_set_says_what_100_percent_means(client, files):
    summary, fused, *_ = explore(client, files["image"], classes="cat")
    assert confidences(fused) == {"cat": pytest.approx(1.0)}
    assert "One class only" in summary and "always 100%" in summary
    assert "One class only" not in explore(client, files["image"], classes="cat, dog")[0]


def test_the_summary_shows_the_ncut_patch_count_and_the_null_weight_in_scientific_notation(client, files, registry):
    from microclip.data.images import load_image
    from microclip.explain import explain_image

    summary = explore(client, files["image"])[0]
    expected = explain_image(registry.get(ADAPTED).model, load_image(files["image"]), 0.5)
    assert f"{int(expected.ncut_mask.sum())} of 16 patches in the foreground" in summary
    assert f"**Null token:** {expected.null_weight:.2e}" in summary
    # [FG] with and without the shift the checkpoint records; the shift points at class 1, so favours it most
    alone = expected.prediction("fg_unshifted")
    p_alone = expected.probabilities("fg_unshifted")[alone]
    same = alone == expected.prediction("fg")
    verdict = f"{CLASSES[alone]} ({p_alone:.1%}; with it" if same else f"**{CLASSES[alone]}** ({p_alone:.1%}) instead"
    assert f"**`[FG]` without its shared shift:** {verdict}" in summary
    assert f"adds {30.0:+.1f} to {CLASSES[1]}'s `[FG]` logit" in summary


def test_descriptions_upload_builds_the_heads_and_is_shown(client, files, tmp_path):
    path = tmp_path / "descriptions.json"
    path.write_text('{"cat": ["a small furry animal with whiskers."], "dog": ["a loyal animal that barks."]}')
    summary, fused, *_, descriptions, _maps, _raw, _patch = client.predict(
        handle_file(str(files["image"])),
        ADAPTED,
        "cat, dog, bird",
        handle_file(str(path)),
        0.5,
        *DISPLAY.values(),
        api_name="/explore",
    )
    assert set(confidences(fused)) == {"cat", "dog", "bird"}
    assert "1 of 3 classes have no descriptions" in summary  # bird falls back to templates
    assert "whiskers" in descriptions or "barks" in descriptions


def test_model_lists_and_classes(client):
    updates = client.predict(ADAPTED, ADAPTED, ZERO_SHOT, ADAPTED, api_name="/list_models")
    assert [u["value"] for u in updates] == [ADAPTED, ADAPTED, ZERO_SHOT, ADAPTED]
    assert all(["zero-shot", "zero-shot"] in u["choices"] for u in updates)
    placeholder, world = client.predict(ZERO_SHOT, api_name="/model_classes")
    assert "3 classes" in placeholder["placeholder"]
    assert world.startswith("**What this model knows.** 3 classes (red square, green disc, blue bar)")
    assert "images at 32×32 px (4×4 patches)" in world


def test_compare_two_models(client, files):
    label_a, label_b, maps_a, maps_b, difference, rank = client.predict(
        handle_file(str(files["image"])), ADAPTED, ZERO_SHOT, "", CLASSES[1], 0.5, "jet", 0, api_name="/compare"
    )
    assert set(confidences(label_a)) == set(CLASSES) == set(confidences(label_b))
    assert figures(maps_a) == ["A: SOAP attention", "A: NCut foreground"]
    assert figures(maps_b) == ["B: SOAP attention", "B: NCut foreground"]
    assert figures(difference) == ["SOAP weight A − B", "A − B on the patch grid"]
    assert f"Class **{CLASSES[1]}**: rank" in rank and "under B" in rank


def soap_difference(registry, image: Path) -> np.ndarray:
    """A − B of the two models' SOAP weights, computed here without the app."""
    from microclip.data.images import load_image
    from microclip.explain import explain_image

    picture = load_image(image)
    return (
        explain_image(registry.get(ADAPTED).model, picture).soap_weights
        - explain_image(registry.get(ZERO_SHOT).model, picture).soap_weights
    )


@pytest.mark.parametrize("fixed", [0.0, 0.25])
def test_difference_map_prints_its_largest_change_and_uses_a_fixed_scale(client, registry, files, fixed):
    *_, difference, _rank = client.predict(
        handle_file(str(files["image"])), ADAPTED, ZERO_SHOT, "", "", 0.5, "jet", fixed, api_name="/compare"
    )
    largest = float(np.abs(soap_difference(registry, files["image"])).max())
    assert f"largest |Δ| = {largest:.2e}" in difference
    scale = fixed if fixed else largest
    assert f"scale ±{scale:.2e}" in difference
    # The grid view's colours: on a fixed scale wider than every change, no patch reaches full colour.
    *_, grid = data_images(difference)
    saturation = np.abs(grid[..., :3].astype(int) - 255).max()
    assert (saturation < 200) if fixed > 2 * largest else (saturation > 150)


# ------------------------------------------------------------------ models


def test_model_info_shows_the_checkpoint_metadata(client):
    info = client.predict(ADAPTED, api_name="/model_info")
    assert all(name in info for name in CLASSES)
    assert "Metrics" in info and "acc" in info and "shapes" in info and "fusion_ratio" in info
    # the fixture's shift is 0.3 × a unit class vector, measured on 12 images
    assert "**`[FG]`'s shared shift:** length 0.300, measured without labels on 12 training images" in info


def test_upload_checkpoint_lists_it_everywhere(client, files, tmp_path):
    state, meta = read_adapted(files["checkpoint"])
    meta.method = {**meta.method, "fusion_ratio": 0.3}  # not the default, so Explore's ρ must follow the model
    copy = save_adapted(tmp_path / "my-model.safetensors", state, meta)
    info, models_tab, explore_tab, explore_ratio, compare_a, compare_b = client.predict(
        handle_file(str(copy)), api_name="/upload_model"
    )
    assert "my-model" in info
    assert models_tab["value"] == explore_tab["value"] == "my-model"  # these switch to it
    assert explore_ratio == 0.3  # with its ρ, in the same answer
    for dropdown in (compare_a, compare_b):  # these list it and keep their selection
        assert ["my-model", "my-model"] in dropdown["choices"] and "value" not in dropdown
    _, *views, _ = client.predict(
        handle_file(str(files["image"])), "my-model", "", None, 0.5, *DISPLAY.values(), api_name="/explore"
    )[5:]
    assert len(views) == 2 and all(data_images(view) for view in views)


def test_pickle_renamed_safetensors_is_refused_and_the_app_keeps_serving(client, tmp_path, registry):
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    names = registry.names()
    with pytest.raises(AppError, match="pickle"):
        client.predict(handle_file(str(evil)), api_name="/upload_model")
    assert registry.names() == names
    assert CLASSES[0] in client.predict(ADAPTED, api_name="/model_info")


# ------------------------------------------------------------------ bad and awkward images


@pytest.mark.parametrize(
    ("name", "message"),
    [("text.jpg", "not an image"), ("truncated.png", "corrupt or truncated"), ("bomb.png", "decompression bomb")],
)
def test_bad_images_give_a_clear_message_and_the_app_keeps_serving(client, files, name, message):
    # Gradio's validator refuses the request before the callback runs: one message, on the image input.
    with pytest.raises(ValidationError, match=f"image: This file cannot be used as an image: .*{message}"):
        explore(client, files[name])
    assert "Prediction:" in explore(client, files["image"])[0]


@pytest.mark.parametrize("name", ["cmyk.jpg", "gray16.png", "palette.png"])
def test_unusual_modes_are_converted(client, files, name):
    assert "Prediction:" in explore(client, files[name])[0]


def test_exif_orientation_is_applied(client, files):
    *_, maps, _raw, _patch = explore(client, files["exif.jpg"])
    shown = data_images(maps)[0].astype(int)  # the photo under the maps (JPEG)
    expected = display_crop(ImageOps.exif_transpose(Image.open(files["exif.jpg"])).convert("RGB"), PHOTO_SIZE)
    assert np.abs(shown - expected.astype(int)).mean() < 4  # the same crop, up to JPEG's loss
    assert shown[:50, :, 0].mean() > 150 > shown[-50:, :, 0].mean()  # rotated: red on top, not on the left


def test_default_registry_pairs_a_checkpoint_with_its_base_zero_shot(files):
    registry = default_registry("cpu", ckpt_path=str(files["checkpoint"]))
    adapted = [n for n in registry.names() if n.startswith("adapted")]
    assert registry.default_name == "adapted" and "adapted · base zero-shot" in adapted
    base = registry.get("adapted · base zero-shot")
    assert base.meta is None and base.classes == tuple(CLASSES) and base.descriptions == DESCRIPTIONS


def test_compare_starts_with_the_zero_shot_model_as_b(files, tiny_model_dir, tmp_path):
    """Compare's B starts as the lesson's "before": the zero-shot base model, even when another adapted model is
    listed ahead of it (the bundled centred and debiased models are), without loading any model to find it."""
    from ui.compare import build_compare_tab

    registry = ModelRegistry("cpu")
    registry.add_checkpoint(files["checkpoint"], "adapted", default=True)
    registry.add_checkpoint(files["checkpoint"], "adapted again")
    registry.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, "zero-shot")
    assert [registry.zero_shot(n) for n in registry.names()] == [False, False, True]
    with gr.Blocks():
        compare = build_compare_tab(registry)
    assert (compare.model_a.value, compare.model_b.value) == ("adapted", "zero-shot")
    assert registry._models == {}  # told apart from the files' headers, nothing built
    gone = tmp_path / "gone.safetensors"  # a run's file deleted after it was listed: not taken for zero-shot
    gone.write_bytes(Path(files["checkpoint"]).read_bytes())
    listed = ModelRegistry("cpu")
    listed.add_checkpoint(files["checkpoint"], "adapted", default=True)
    listed.add_checkpoint(gone, "gone")
    listed.add_base(f"local-dir:{tiny_model_dir}", None, CLASSES, "zero-shot")
    gone.unlink()
    with gr.Blocks():
        assert build_compare_tab(listed).model_b.value == "zero-shot"
    lone = ModelRegistry("cpu")
    lone.add_checkpoint(files["checkpoint"], "adapted", default=True)
    lone.add_checkpoint(files["checkpoint"], "other")
    with gr.Blocks():
        assert build_compare_tab(lone).model_b.value == "other"  # no zero-shot model: the first other one


def test_opening_a_model_list_refreshes_it_and_never_sets_the_choice(registry):
    """A list opened is listed again (runs can be saved meanwhile), but its answer must not carry the value it was
    opened with: a model chosen while that answer is on its way would be undone, and the settings that follow the
    choice with it."""
    demo = build_demo(registry)
    refreshes = [f for f in demo.fns.values() if any(event == "focus" for _, event in f.targets)]
    assert len(refreshes) >= 2 and all(isinstance(out, gr.Dropdown) for f in refreshes for out in f.outputs)
    for refresh in refreshes:
        assert not refresh.inputs
        update = refresh.fn()
        assert update.constructor_args == {"choices": registry.names()}
