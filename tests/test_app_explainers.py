"""The "Compare explainers" view over HTTP: ``/explainers`` driven with ``gradio_client`` on a served app.
Nothing under test is mocked."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, draw_sample, serve, tiny_base_registry
from PIL import Image

from microclip.data.transforms import test_transform
from microclip.explainers import EXPLAINERS, TIMING_REPEATS, part_score, run_explainers
from microclip.faithfulness import deletion_drops
from microclip.toyworld.lookup import find_toyworld_sample
from studio.explainers import DELETION_HEADER, PREDICTED
from ui.app import build_demo
from ui.common import DISPLAY_SIZE
from viz.colormaps import symmetric_limit
from viz.overlay import display_crop
from viz.peers import SIGNED_NOTE, peer_panel

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

TOY_EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "toybird-yovanel-warbler.png"
MODEL = "tiny"


@pytest.fixture(scope="module")
def registry(tiny_model_dir):
    return tiny_base_registry(tiny_model_dir, MODEL)


@pytest.fixture(scope="module")
def client(registry):
    with serve(build_demo(registry)) as url:
        yield gradio_client.Client(url, verbose=False)


@pytest.fixture(scope="module")
def plain_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explainers") / "disc.png"
    draw_sample(1, np.random.default_rng(5), size=48).save(path)
    return path


def compare(client, image: Path | None, class_choice: str = PREDICTED, cmap: str = "jet", opacity: float = 0.6):
    return client.predict(
        handle_file(str(image)) if image else None, MODEL, class_choice, cmap, opacity, api_name="/explainers"
    )


def table_rows(table: str) -> dict[str, list[str]]:
    """Markdown table rows as title → cells (after the title)."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_toy_example_shows_every_map_outlined_and_scored(client, registry):
    gallery, scale, table = compare(client, TOY_EXAMPLE)
    assert len(gallery) == len(EXPLAINERS)
    for item, explainer in zip(gallery, EXPLAINERS.values()):
        assert item["caption"].startswith(explainer.title) and item["caption"].endswith(" ms")
        assert Image.open(item["image"]).size == (DISPLAY_SIZE, DISPLAY_SIZE)
    assert Image.open(scale).size[0] == DISPLAY_SIZE
    assert "top patch on a part" in table and "mass inside the part mask" in table and "yovanel warbler" in table
    rows = table_rows(table)
    for explainer in EXPLAINERS.values():
        ms, pointing, mass = rows[explainer.title]
        assert float(ms) > 0 and (pointing in ("yes", "no") or "tied" in pointing) and mass.endswith("%")
    assert "_chance (uniform map)_" in rows

    # The SOAP row and picture are this model's SOAP map on this image, scored and outlined with its parts.
    picture = Image.open(TOY_EXAMPLE).convert("RGB")
    model = registry.get(MODEL).model
    tensor = test_transform(model.backbone.image_size, crop="center")(picture)
    soap = run_explainers(model, tensor, names=["soap"]).runs["soap"].saliency
    sample = find_toyworld_sample(np.asarray(picture))
    assert rows["SOAP attention"][2] == f"{part_score(soap, sample.part_mask).mass_inside:.1%}"
    plain = peer_panel(display_crop(picture, DISPLAY_SIZE), soap, "jet", 0.6)
    shown = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    changed = (shown != plain).any(axis=-1)
    big_mask = cv2.resize(
        sample.part_mask.astype(np.uint8), (DISPLAY_SIZE, DISPLAY_SIZE), interpolation=cv2.INTER_NEAREST
    )
    near_border = cv2.dilate(big_mask, np.ones((9, 9), np.uint8)) & (1 - cv2.erode(big_mask, np.ones((9, 9), np.uint8)))
    assert changed.any() and not (changed & (near_border == 0)).any()  # only the part outlines were added

    # SOAP per class is signed: drawn around zero (red adds to the class, blue takes), its scale in the caption.
    names = list(EXPLAINERS)
    index = names.index("soap_contribution")
    terms = run_explainers(model, tensor, names=["soap_contribution"]).runs["soap_contribution"].saliency
    assert terms.min() < 0 < terms.max()  # both kinds of patch on this bird, so the scale's centre matters
    assert f"full at ±{symmetric_limit(terms):.3g}" in gallery[index]["caption"] and SIGNED_NOTE in table
    diverging = peer_panel(display_crop(picture, DISPLAY_SIZE), terms, "jet", 0.6, signed=True)
    shown = np.asarray(Image.open(gallery[index]["image"]).convert("RGB"))
    assert not ((shown != diverging).any(axis=-1) & (near_border == 0)).any()


def test_other_images_get_maps_but_no_scores_and_a_line_saying_why(client, plain_image):
    gallery, _, table = compare(client, plain_image, class_choice=CLASSES[2], cmap="viridis")
    assert len(gallery) == len(EXPLAINERS)
    assert f"**Explaining class: {CLASSES[2]}** (chosen)" in table
    assert "top patch on a part" not in table and "not a known toy-world image" in table
    assert all(float(cells[0]) > 0 for cells in table_rows(table).values())


def test_no_image_or_an_unknown_class_is_one_clear_error(client):
    with pytest.raises(AppError, match="Add an image first"):
        compare(client, None)
    with pytest.raises(AppError, match="'penguin' is not one of"):
        compare(client, TOY_EXAMPLE, class_choice="penguin")


def test_the_class_picker_lists_the_models_classes(client):
    update = client.predict(MODEL, api_name="/explainer_classes")
    assert update["value"] == PREDICTED
    assert [choice[0] for choice in update["choices"]] == [PREDICTED, *CLASSES]


def test_identical_requests_at_once_all_download_complete_pictures(client, plain_image):
    """Gradio writes numpy outputs in place to a path named by their content: identical concurrent requests
    once rewrote the same file while another client downloaded it (truncated downloads). The app now hands
    Gradio complete, uniquely named files."""
    import threading

    results: list = []

    def user() -> None:
        try:
            results.append(compare(gradio_client.Client(client.src, verbose=False), plain_image))
        except Exception as error:  # noqa: BLE001 - collected and reported below
            results.append(error)

    threads = [threading.Thread(target=user) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 6 and not [r for r in results if isinstance(r, Exception)], results
    reference = None
    for gallery, scale, _table in results:
        pictures = [np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery]  # decodes fully
        pictures.append(np.asarray(Image.open(scale).convert("RGB")))
        if reference is None:
            reference = pictures
        assert all(np.array_equal(a, b) for a, b in zip(pictures, reference))


def test_deletion_scores_are_a_column_beside_the_pointing_scores_and_a_table_per_branch(client, registry):
    """Asked for, each map gets its ROAD deletion score (the fused prediction's mean probability drop, in points) in a
    column of its own after the pointing scores, and each branch's (fused, [CLS], [FG]) in a table under it."""
    _gallery, _scale, table = client.predict(
        handle_file(str(TOY_EXAMPLE)), MODEL, PREDICTED, "jet", 0.6, True, api_name="/explainers"
    )
    pointing = " top patch on a part | mass inside the part mask |" if "Toy-world image" in table else ""
    assert f"| method | ms |{pointing} {DELETION_HEADER} |" in table  # the last column, after any pointing scores
    assert f"_ms_: each method's time on this image, the median of {TIMING_REPEATS} calls." in table
    main, branches = table.split("_Deletion, branch by branch_")
    rows, per_branch = table_rows(main), table_rows(branches)
    scored = [title for title in rows if not title.startswith("_")]
    assert scored and len(scored) == len(EXPLAINERS) - table.count("is unavailable here")
    assert list(per_branch) == scored  # the same maps, in the same order
    for title in scored:
        assert -100.0 <= float(rows[title][-1]) <= 100.0  # points: a difference of two probabilities
        assert rows[title][-1] == per_branch[title][0]  # the fused drop, in both tables
    assert all("unavailable" not in " ".join(cells) for cells in rows.values())
    # SOAP's rows are ROAD on SOAP's own map of this image, branch by branch
    model = registry.get(MODEL).model
    tensor = test_transform(model.backbone.image_size, crop="center")(Image.open(TOY_EXAMPLE).convert("RGB"))
    soap = run_explainers(model, tensor, names=["soap"]).runs["soap"].saliency
    drops = deletion_drops(model, tensor[None], soap.reshape(1, -1))
    assert per_branch[EXPLAINERS["soap"].title] == [f"{100 * drops[b][0]:.1f}" for b in ("fused", "cls", "fg")]
