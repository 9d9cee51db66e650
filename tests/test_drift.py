"""microclip.drift: the label-free drift measures, against loops and hand-checked cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_bench
from safetensors.torch import load_file

from microclip.checkpoint import CheckpointError, load_model, load_start_model, read_adapted, save_adapted
from microclip.drift import ShiftProbe, agreement, epoch_signs, set_value_centre, shared_part, split_value_map
from microclip.explain import explain_batch

fg_shift_bench = load_bench("fg_shift")


def test_shared_part_is_the_mean_cosine_to_the_mean_direction():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(7, 5))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    mean = rows.sum(0) / np.linalg.norm(rows.sum(0))
    expected = sum(float(np.dot(row, mean)) for row in rows) / len(rows)
    assert shared_part(torch.tensor(rows)) == pytest.approx(expected, abs=1e-6)
    assert shared_part(torch.tensor([[0.6, 0.8]] * 4)) == pytest.approx(1.0)
    # two opposite pairs at right angles: the mean direction is the diagonal, each row at 45° to it
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert shared_part(square) == pytest.approx(np.sqrt(0.5))


def test_agreement_counts_rows_answering_as_the_fused_logits():
    fused = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    branch = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
    assert agreement(branch, fused) == 50.0
    assert agreement(fused, fused) == 100.0


def test_split_value_map_puts_the_change_on_the_mean_input_in_one_part_and_nothing_of_it_in_the_other():
    gen = torch.Generator().manual_seed(0)
    start, now = torch.randn(5, 5, generator=gen), torch.randn(5, 5, generator=gen)
    mean_input = 3 * torch.randn(5, generator=gen)  # any length: only its direction counts
    unit = mean_input / mean_input.norm()
    split = split_value_map(start, now, mean_input)
    on_unit, rest = split.only_mean_part - start, split.without_mean_part - start
    assert torch.equal(split.as_trained, now) and torch.equal(split.at_start, start)
    torch.testing.assert_close(on_unit + rest, now - start)
    torch.testing.assert_close(on_unit @ unit, (now - start) @ unit)  # the change on the mean input, whole
    torch.testing.assert_close(rest @ unit, torch.zeros(5), atol=1e-6, rtol=0)
    other = torch.randn(5, generator=gen)
    other -= (other @ unit) * unit
    torch.testing.assert_close(on_unit @ other, torch.zeros(5), atol=1e-6, rtol=0)  # and nothing else
    assert torch.linalg.matrix_rank(on_unit) == 1
    assert split.mean_part_share == pytest.approx(float(on_unit.pow(2).sum() / (now - start).pow(2).sum()))


def test_epoch_signs_reads_the_train_prefixed_signs_and_leaves_out_what_a_row_lacks():
    row = {"epoch": 3, "train_agree_cls": 90.5, "train_agree_fg": 61.25, "train_shared_fg": 0.7, "test_acc_fg": 50.0}
    assert epoch_signs(row) == {"agree_cls": 90.5, "agree_fg": 61.25, "shared_fg": 0.7}
    assert epoch_signs({"epoch": 0, "test_acc": 71.0}) == {}  # the start: nothing trained yet


# ------------------------------------------------------------------ the shared [FG] shift, in the product

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "toybirds-microclip.safetensors"
START = SHIPPED.parent / "toybirds-microclip-epochs" / "epoch-0.safetensors"
shipped = pytest.mark.skipif(not START.is_file(), reason="the toy model and its epochs are not shipped")


@pytest.fixture(scope="module")
def train_split_at_start(tmp_path_factory) -> tuple[np.ndarray, torch.Tensor]:
    """The toy train split's raw pixels and their `[FG]` at the run's start as train.py --keep_epochs saved it
    (epoch-0), not the start rebuilt from the base as `drift` does: shared by every checkpoint's check."""
    from microclip.toyworld.dataset import ensure_split, load_split_arrays

    root = tmp_path_factory.mktemp("toy")
    ensure_split(str(root), "train")
    images, _ = load_split_arrays(str(root), "train")
    return images, fg_shift_bench.branch_embeddings(load_model(START), images)[1]


@shipped
@pytest.mark.parametrize("checkpoint", [SHIPPED, START.with_name("epoch-1.safetensors")], ids=["end", "epoch-1"])
def test_the_shipped_shift_is_the_mean_fg_now_minus_at_the_start_over_the_train_images(
    train_split_at_start, checkpoint
):
    model = load_model(checkpoint)
    stored = model.fg_shift
    assert stored is not None and model.meta.drift["images"] == 1600
    # Independently: bench/fg_shift.py's embeddings of the train split's raw pixels, now and at the start.
    images, f_start = train_split_at_start
    _, f_end = fg_shift_bench.branch_embeddings(model, images)
    tolerance = 1e-5
    assert torch.allclose(stored, f_end.mean(0) - f_start.mean(0), atol=tolerance)
    # a real shift, far above the comparison's tolerance (0.017 after epoch 1 of the shipped run, 0.08 at its end)
    assert float(stored.norm()) > 100 * tolerance * stored.numel() ** 0.5


@shipped
def test_the_start_rebuilt_from_the_base_is_the_start_train_py_saved():
    start = load_start_model(SHIPPED).adapted_state()
    saved = load_file(START)
    assert set(start) == set(saved)
    # W* is the file's (the trained one): the start's is not recorded, and [FG] does not depend on it
    for name in (n for n in saved if not n.startswith("heads.")):
        assert torch.equal(start[name], saved[name]), name


@shipped
def test_fg_shift_measures_from_a_start_state_and_leaves_the_model_as_it_was():
    from torch.utils.data import TensorDataset

    model = load_model(SHIPPED)
    before = model.adapted_state()
    images = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    probe = ShiftProbe(load_file(START), TensorDataset(images), batch_size=4)
    shift, n_images = probe.measure(model), probe.n_images
    assert n_images == 10 and all(torch.equal(before[k], v) for k, v in model.adapted_state().items())
    with torch.no_grad():
        end = model(images).fg_embed.mean(0)
        model.load_adapted_state(load_file(START))
        begin = model(images).fg_embed.mean(0)
    assert torch.allclose(shift, end - begin, atol=1e-6)


@shipped
def test_fg_shift_measures_on_an_evenly_spaced_sample_of_a_large_set(monkeypatch):
    from torch.utils.data import TensorDataset

    import microclip.drift as drift

    monkeypatch.setattr(drift, "SHIFT_IMAGES", 4)
    model = load_model(SHIPPED)
    images = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    probe = drift.ShiftProbe(load_file(START), TensorDataset(images), batch_size=3)
    shift, n_images = probe.measure(model), probe.n_images
    kept = images[[0, 3, 6, 9]]  # by hand: 4 of 10, first and last included, evenly spaced
    with torch.no_grad():
        end = model(kept).fg_embed.mean(0)
        model.load_adapted_state(load_file(START))
        begin = model(kept).fg_embed.mean(0)
    assert n_images == 4 and torch.allclose(shift, end - begin, atol=1e-6)


@shipped
def test_an_explanation_splits_fg_into_the_image_and_the_shared_shift():
    model = load_model(SHIPPED)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    explanations = explain_batch(model, images)
    with torch.no_grad():
        f = model(images).fg_embed
    w_hat = model.heads.w_star_hat().detach()
    for e, f_row in zip(explanations, f):
        # exact: 100 f·Ŵ* = 100 (f − s)·Ŵ* + 100 s·Ŵ*, the last the same for every image
        np.testing.assert_allclose(e.fg_shift_logits, (100 * model.fg_shift @ w_hat.T).numpy(), atol=1e-4)
        np.testing.assert_allclose(
            e.logits_fg - e.fg_shift_logits, (100 * (f_row - model.fg_shift) @ w_hat.T).numpy(), atol=1e-3
        )
        unshifted = 100 * (f_row - model.fg_shift) / (f_row - model.fg_shift).norm() @ w_hat.T
        np.testing.assert_allclose(e.logits_fg_unshifted, unshifted.numpy(), atol=1e-3)
        assert e.prediction("fg_unshifted") == int(unshifted.argmax())
        c = e.prediction()
        assert e.shift_part(c) == pytest.approx((1 - e.ratio) * e.fg_shift_logits[c])
    # a model whose run did not measure it: nothing is made up
    model.fg_shift = None
    bare = explain_batch(model, images[:1])[0]
    assert bare.fg_shift_logits is None and bare.shift_part(0) is None
    with pytest.raises(KeyError, match="did not measure"):
        bare.prediction("fg_unshifted")


@shipped
def test_a_bad_stored_shift_is_a_clear_error(tmp_path):
    tensors, meta = read_adapted(SHIPPED)
    meta.drift = {"fg_shift": [0.1, 0.2], "images": 5}
    save_adapted(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="bad.safetensors: drift.fg_shift is not a list of 128 numbers"):
        load_model(tmp_path / "bad.safetensors")


@shipped
def test_set_value_centre_centres_the_tokens_as_soap_weighs_them_and_changes_no_output_at_the_start():
    from dataclasses import replace

    from torch.utils.data import TensorDataset

    from microclip.model import MicroCLIP

    plain = load_model(START)
    centred = MicroCLIP(plain.backbone, plain.heads, replace(plain.config, centre_values=True)).eval()
    images = torch.rand(7, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    centre = set_value_centre(centred, TensorDataset(images), batch_size=3)
    assert torch.equal(centred.soap.value_centre, centre) and centre.norm() > 1
    # by hand, image by image: the attention-weighted tokens minus the centre sum to zero over the images
    residual, with_plain = torch.zeros_like(centre), []
    with torch.no_grad():
        for image in images:
            out = centred(image[None])
            alpha = out.soap.weights[0, :-1]
            residual += (alpha[:, None] * (out.tokens.patches[0] - centre)).sum(0)
            with_plain.append(torch.allclose(out.fg_embed, plain(image[None]).fg_embed, atol=1e-5))
    assert residual.norm() < 1e-4 * centre.norm() * len(images)
    assert all(with_plain)  # SOAP's value map is still the identity: the centre moves nothing yet


@shipped
def test_a_centred_checkpoint_without_its_centre_is_a_clear_error(tmp_path):
    tensors, meta = read_adapted(SHIPPED)
    meta.method = {**meta.method, "centre_values": True}
    save_adapted(tmp_path / "nocentre.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="nocentre.safetensors: .* no soap.value_centre"):
        load_start_model(tmp_path / "nocentre.safetensors")
    with pytest.raises(ValueError, match="missing \\['soap.value_centre'\\]"):
        load_model(tmp_path / "nocentre.safetensors")


@shipped
def test_the_value_route_splits_the_shift_w_v_makes_by_hand():
    from torch.utils.data import TensorDataset

    model, start_state = load_model(SHIPPED), load_file(START)
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    before = model.adapted_state()
    route = ShiftProbe(start_state, TensorDataset(images), batch_size=4).value_route(model)
    assert all(torch.equal(before[k], v) for k, v in model.adapted_state().items())
    # by hand: m from the start's weights and tokens, image by image; W_v's change split on it; f's mean each way
    start = load_model(SHIPPED)
    start.load_adapted_state(start_state)
    with torch.no_grad():
        outs = [start(image[None]) for image in images]
        weighted = sum((o.soap.weights[0, :-1, None] * o.tokens.patches[0]).sum(0) for o in outs)
        m = weighted / sum(float(o.soap.weights[0, :-1].sum()) for o in outs)
        unit = m / m.norm()
        w0, w1 = start_state["soap.value_proj.weight"], before["soap.value_proj.weight"]
        on_m = torch.outer((w1 - w0) @ unit, unit)
        begin = start(images).fg_embed.mean(0)

        def shift_with(weight: torch.Tensor) -> float:
            model.soap.value_proj.weight.copy_(weight)
            return float((model(images).fg_embed.mean(0) - begin).norm())

        expected = (shift_with(w1), shift_with(w0 + on_m), shift_with(w1 - on_m))
        model.soap.value_proj.weight.copy_(w1)
    assert (route.shift, route.through_mean, route.without_mean) == pytest.approx(expected, abs=1e-5)
    assert route.mean_part_share == pytest.approx(float(on_m.pow(2).sum() / (w1 - w0).pow(2).sum()), rel=1e-5)
    assert route.through_mean > route.without_mean  # on the shipped run, the route carries most of W_v's shift
