from __future__ import annotations

import math

import pytest
import torch

from microclip.soap import SOAP, canonical_fiedler, foreground_mask, ncut_laplacian, soap_query


def slow_foreground_mask(tokens: torch.Tensor, tau=0.2, eps=1e-6, threshold="std", sign="solver"):
    """The reference's NCut for one image, step by step with loops (canonical: the orientation rule)."""
    n = tokens.shape[0]
    dtype = torch.float32 if sign == "solver" else torch.float64
    tokens = tokens.to(dtype)
    affinity = torch.empty(n, n, dtype=dtype)
    for i in range(n):
        for j in range(n):
            affinity[i, j] = 1.0 if float(tokens[i] @ tokens[j]) > tau else eps
    degree = affinity.sum(1)
    d_inv = torch.diag(1.0 / (degree.sqrt() + eps))
    laplacian = d_inv @ (torch.diag(degree) - affinity) @ d_inv
    values, vectors = torch.linalg.eigh(laplacian)
    e = vectors[:, 1].clone()
    seed = int(e.abs().argmax())
    if sign == "canonical":
        assert values[2] - values[1] > 1e-3, "the slow version assumes a simple second eigenvalue"
        if e[seed] < 0:
            e = -e
    cut = e.std() if threshold == "std" else e.mean()
    mask = e > cut
    if sign == "solver" and not mask[seed]:
        mask = ~mask
    return mask


def planted(n_fg: int, n_bg: int, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=gen)
    fg = 4 * direction + 0.3 * torch.randn(n_fg, dim, generator=gen)
    bg = -4 * direction + 0.3 * torch.randn(n_bg, dim, generator=gen)
    order = torch.randperm(n_fg + n_bg, generator=gen)
    tokens = torch.cat([fg, bg])[order]
    truth = torch.cat([torch.ones(n_fg, dtype=torch.bool), torch.zeros(n_bg, dtype=torch.bool)])[order]
    return tokens, truth


def three_equal_clusters(size: int = 5, dim: int = 8) -> torch.Tensor:
    """Tokens in three identical, mutually orthogonal clusters: the graph is three equal cliques, so the
    second eigenvalue is exactly double and a solver may return any basis of its eigenspace."""
    basis = torch.eye(dim)[:3] * 2.0
    return basis.repeat_interleave(size, dim=0)  # (3 * size, dim); token 0 is in the first cluster


@pytest.mark.parametrize("threshold", ["std", "mean"])
@pytest.mark.parametrize("sign", ["solver", "canonical"])
def test_batched_mask_matches_slow_reference(threshold, sign):
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randn(4, 12, 8, generator=gen) * 3
    fast = foreground_mask(tokens, threshold=threshold, sign=sign)
    for b in range(4):
        assert torch.equal(fast[b], slow_foreground_mask(tokens[b], threshold=threshold, sign=sign))


def test_old_sign_names_still_work_with_a_deprecation_message():
    tokens = torch.randn(2, 10, 6, generator=torch.Generator().manual_seed(3)) * 2
    with pytest.warns(FutureWarning, match="now called 'solver'"):
        old = foreground_mask(tokens, sign="faithful")
    assert torch.equal(old, foreground_mask(tokens, sign="solver"))
    with pytest.warns(FutureWarning, match="now called 'canonical'"):
        assert torch.equal(foreground_mask(tokens, sign="symmetric"), foreground_mask(tokens))
    with pytest.raises(ValueError, match="unknown ncut_sign 'flip'"):
        foreground_mask(tokens, sign="flip")


def test_planted_two_clusters_are_separated():
    tokens, truth = planted(5, 11)  # a small salient cluster among background tokens
    # The Fiedler vector is constant on each cluster with opposite signs, and the small cluster
    # has the larger magnitude; the canonical orientation picks that cluster exactly.
    assert torch.equal(foreground_mask(tokens[None])[0], truth)
    assert torch.equal(foreground_mask(tokens[None], threshold="mean")[0], truth)
    # The solver's rule does not: when the small cluster sits on the negative side, no entry
    # exceeds std(e), the seed is "background", and the flipped mask covers every token.
    # (Hand-checked for this case: e = +0.129 on the 11 background tokens, -0.404 on the 5.)
    solver = foreground_mask(tokens[None], sign="solver")[0]
    assert solver.all() or torch.equal(solver, truth)


def test_solver_sign_flip_is_asymmetric():
    # When the largest-|e| entry falls below the threshold the reference flips the mask, giving
    # {e <= thr}, which is not {-e > thr}: check both against the eigenvector directly.
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        tokens = torch.randn(1, 10, 6, generator=gen) * 2
        solver = foreground_mask(tokens, sign="solver")[0]
        canonical = foreground_mask(tokens, sign="canonical")[0]
        if not torch.equal(solver, canonical):
            assert solver.sum() > canonical.sum()  # the complement of a tail is larger than a tail
            return
    pytest.fail("no example where the solver's flip differs from the canonical orientation")


def _eigh(tokens: torch.Tensor):
    laplacian, degree = ncut_laplacian(tokens.double())
    values, vectors = torch.linalg.eigh(laplacian)
    return values, vectors, degree


def test_canonical_fiedler_ignores_the_sign_of_every_eigenvector():
    tokens = torch.randn(6, 16, 8, generator=torch.Generator().manual_seed(7)) * 3
    values, vectors, degree = _eigh(tokens)
    flips = torch.where(torch.rand(6, 1, 16, generator=torch.Generator().manual_seed(8)) < 0.5, -1.0, 1.0)
    reference = canonical_fiedler(values, vectors, degree)
    torch.testing.assert_close(canonical_fiedler(values, -vectors, degree), reference)
    torch.testing.assert_close(canonical_fiedler(values, vectors * flips.double(), degree), reference)
    # and it is the solver's Fiedler vector, oriented so that its largest-|e| entry is positive
    fiedler = vectors[..., 1]
    seed = fiedler.abs().argmax(1, keepdim=True)
    torch.testing.assert_close(reference, fiedler * fiedler.gather(1, seed).sign())


def test_degenerate_second_eigenvalue_gives_a_basis_independent_mask():
    tokens = three_equal_clusters()
    values, vectors, degree = _eigh(tokens[None])
    assert values[0, 2] - values[0, 1] < 1e-12  # exactly double
    # Any rotation of the eigenspace is an equally valid solver output.
    angle = torch.tensor(0.7, dtype=torch.float64)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    rotated = vectors.clone()
    rotated[0, :, 1:3] = vectors[0, :, 1:3] @ rotation
    torch.testing.assert_close(canonical_fiedler(values, rotated, degree), canonical_fiedler(values, vectors, degree))
    # The tie between the three clusters is broken by the lowest token index: the cluster of token 0.
    mask = foreground_mask(tokens[None])[0]
    assert mask.tolist() == [True] * 5 + [False] * 10


def _token_sets() -> list[torch.Tensor]:
    """Patch tokens of several kinds: Gaussian, planted clusters, a degenerate graph, a random ViT's."""
    from conftest import make_clip

    from microclip.backbone import Backbone

    gen = torch.Generator().manual_seed(11)
    backbone = Backbone(make_clip().visual)
    with torch.no_grad():
        vit = backbone(torch.rand(8, 3, 32, 32, generator=gen)).patches
    return [torch.randn(16, 49, 32, generator=gen) * 4, planted(7, 42)[0][None], three_equal_clusters()[None], vit]


def test_mask_is_the_same_with_one_or_two_threads():
    threads = torch.get_num_threads()
    try:
        for tokens in _token_sets():
            torch.set_num_threads(1)
            one = foreground_mask(tokens)
            torch.set_num_threads(2)
            assert torch.equal(foreground_mask(tokens), one)
    finally:
        torch.set_num_threads(threads)


def test_mask_is_the_same_on_another_lapack_path():
    # float32 runs other LAPACK routines (ssyevd, not dsyevd) with ~1e9 times the rounding error.
    for tokens in _token_sets():
        assert torch.equal(foreground_mask(tokens, eigh_dtype=torch.float32), foreground_mask(tokens))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu.sh runs it on a GPU)")
def test_mask_is_the_same_when_the_eigensolver_runs_on_cuda():
    for tokens in _token_sets():
        assert torch.equal(foreground_mask(tokens, eigh_device="cuda"), foreground_mask(tokens))


def test_mask_has_no_gradient():
    tokens = torch.randn(2, 9, 4, requires_grad=True)
    assert not foreground_mask(tokens).requires_grad


def test_query_is_mean_of_foreground_or_zero():
    patches = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    query = soap_query(patches, mask, cls_token=torch.zeros(2, 4))
    torch.testing.assert_close(query[0], (patches[0, 0] + patches[0, 2]) / 2)
    torch.testing.assert_close(query[1], torch.zeros(4))


def test_soap_is_identity_initialised_attention_with_null_sink():
    soap = SOAP(width=6)
    for proj in (soap.query_proj, soap.key_proj, soap.value_proj):
        assert torch.equal(proj.weight, torch.eye(6))
    gen = torch.Generator().manual_seed(0)
    patches = torch.randn(2, 5, 6, generator=gen)
    query = torch.randn(2, 6, generator=gen)
    out = soap(patches, query)
    for b in range(2):
        logits = [float(query[b] @ patches[b, j]) / math.sqrt(6) for j in range(5)] + [0.0]  # null key = 0
        weights = torch.tensor(logits).softmax(0)
        torch.testing.assert_close(out.weights[b], weights)
        torch.testing.assert_close(out.pooled[b], sum(weights[j] * patches[b, j] for j in range(5)))


def _centred_soap(width: int, centre: torch.Tensor, value_weight: torch.Tensor) -> SOAP:
    soap = SOAP(width=width, centre_values=True)
    with torch.no_grad():
        soap.value_centre.copy_(centre)
        soap.value_proj.weight.copy_(value_weight)
    return soap


def test_centred_values_are_w_v_of_each_token_minus_the_centre_plus_the_centre_by_hand():
    gen = torch.Generator().manual_seed(3)
    patches, query = torch.randn(2, 5, 6, generator=gen), torch.randn(2, 6, generator=gen)
    centre, weight = torch.randn(6, generator=gen), torch.eye(6) + 0.3 * torch.randn(6, 6, generator=gen)
    out = _centred_soap(6, centre, weight)(patches, query)
    for b in range(2):
        logits = [float(query[b] @ patches[b, j]) / math.sqrt(6) for j in range(5)] + [0.0]
        weights = torch.tensor(logits).softmax(0)  # the values play no part in where SOAP looks
        pooled = sum(weights[j] * (weight @ (patches[b, j] - centre) + centre) for j in range(5))  # null value: 0
        torch.testing.assert_close(out.weights[b], weights)
        torch.testing.assert_close(out.pooled[b], pooled)
    # at the identity the centre changes nothing: the reference's SOAP as it starts
    identity = _centred_soap(6, centre, torch.eye(6))(patches, query)
    torch.testing.assert_close(identity.pooled, SOAP(width=6)(patches, query).pooled)


def test_a_value_change_on_the_shared_component_moves_every_image_alike_unless_the_values_are_centred():
    gen = torch.Generator().manual_seed(4)
    centre = torch.randn(6, generator=gen)
    unit = centre / centre.norm()
    residual = torch.randn(3, 5, 6, generator=gen)
    residual -= (residual @ unit)[..., None] * unit  # every token = the centre + a part orthogonal to it
    patches, query = centre + residual, torch.randn(3, 6, generator=gen)
    u = torch.randn(6, generator=gen)
    weight = torch.eye(6) + u[:, None] * unit[None, :]  # W_v's change meets only the shared component
    start = SOAP(width=6)(patches, query)
    plain = SOAP(width=6)
    with torch.no_grad():
        plain.value_proj.weight.copy_(weight)
    moved = plain(patches, query)
    kept = 1 - start.weights[:, -1:]  # the patches' share of the attention, the null token's left out
    # without centring: one vector, u · |centre|, added to every image's pooled token in its patches' share
    torch.testing.assert_close(moved.pooled - start.pooled, kept * centre.norm() * u)
    # centred: nothing moves
    torch.testing.assert_close(_centred_soap(6, centre, weight)(patches, query).pooled, start.pooled)


def test_null_token_logit_is_zero_even_after_training():
    soap = SOAP(width=4)
    with torch.no_grad():
        soap.key_proj.weight.mul_(3.0)
        soap.query_proj.weight.add_(0.5)
    patches = torch.full((1, 3, 4), -10.0)  # every patch strongly mismatches the query
    query = torch.ones(1, 4)
    out = soap(patches, query)
    assert out.weights[0, -1] > 0.99  # the sink takes the mass
    assert out.pooled.abs().max() < 1e-3  # and contributes nothing to the pooled value


def test_ncut_average_and_naive_average_pooling():
    soap = SOAP(width=2)
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]])
    mask = torch.tensor([[True, False, True]])
    ncut = soap(patches, torch.zeros(1, 2), mask, pool="ncut_avg")
    naive = soap(patches, torch.zeros(1, 2), mask, pool="naive_avg")
    torch.testing.assert_close(ncut.pooled, torch.tensor([[2.0, 1.5]]))
    torch.testing.assert_close(naive.pooled, torch.tensor([[4.0 / 3, 4.0 / 3]]))
    assert ncut.weights.shape == (1, 4) and ncut.weights[0, -1] == 0
