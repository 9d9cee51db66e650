"""The result cache behind the walkthrough and Explore (studio/cache.py): one computation for many identical requests,
bounded, never stale (keyed by the model's weights, the image's bytes, the class set and the options), errors not
kept. The end-to-end checks compare cached answers with answers computed without the cache."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch
from conftest import CLASSES, draw_sample, tiny_base_registry

from studio import cache
from studio.cache import ResultCache, cached, file_digest, model_identity
from ui.explore import explore
from ui.queries import ask_pools, ask_queries
from ui.walkthrough import _walk, walk

DISPLAY = (0.5, "viridis", 0, 100, 0, "SOAP weight", False)


def test_concurrent_identical_requests_compute_once():
    results, calls = ResultCache(4), []

    def compute():
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to arrive while it runs
        return object()

    answers = []
    threads = [threading.Thread(target=lambda: answers.append(results.get(("k",), compute))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1 and len(answers) == 8 and all(a is answers[0] for a in answers)
    assert results.misses == 1 and results.hits == 7


def test_the_cache_is_bounded_least_recently_used_first():
    results = ResultCache(2)
    results.get("a", lambda: 1)
    results.get("b", lambda: 2)
    results.get("a", lambda: 1)  # a is now the most recent
    results.get("c", lambda: 3)
    assert len(results) == 2
    assert results.get("a", lambda: "recomputed") == 1
    assert results.get("b", lambda: "recomputed") == "recomputed"


def test_errors_are_not_kept_and_waiters_try_again():
    results = ResultCache(4)
    with pytest.raises(ValueError):
        results.get("k", lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert results.get("k", lambda: 5) == 5


def test_model_identity_follows_the_weights(tiny_clip):
    first = model_identity(tiny_clip)
    assert model_identity(tiny_clip) == first
    with torch.no_grad():
        next(tiny_clip.parameters()).add_(0.0)  # written in place, even with the same values
    assert model_identity(tiny_clip) != first
    other = torch.nn.Linear(2, 2)
    assert model_identity(other)[0] != first[0]


def test_file_digest_is_by_content(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    draw_sample(0, np.random.default_rng(0)).save(a)
    shutil.copyfile(a, b)
    draw_sample(1, np.random.default_rng(1)).save(c)
    assert file_digest(a) == file_digest(b) != file_digest(c)
    assert file_digest(None) is None


@pytest.fixture()
def registry_and_images(tiny_model_dir, tmp_path):
    cache.RESULTS.clear()
    registry = tiny_base_registry(tiny_model_dir)
    first, copy, other = tmp_path / "one.png", tmp_path / "copy-of-one.png", tmp_path / "two.png"
    draw_sample(0, np.random.default_rng(3), size=48).save(first)
    shutil.copyfile(first, copy)
    draw_sample(2, np.random.default_rng(4), size=48).save(other)
    return registry, first, copy, other


def test_walkthrough_and_explore_answers_are_shared_and_equal_to_uncached(registry_and_images):
    registry, first, copy, other = registry_and_images
    page, numbers = walk(registry, str(first), "tiny", "")
    again = walk(registry, str(copy), "tiny", "")  # another upload of the same bytes
    assert again[0] is page
    assert _walk(registry, str(first), "tiny", "")[0] == page  # the cached page is the one computed afresh
    assert walk(registry, str(other), "tiny", "")[0] != page

    shown = explore(registry, str(first), "tiny", "", None, 0.5, *DISPLAY)
    assert explore(registry, str(copy), "tiny", "", None, 0.5, *DISPLAY) is shown
    cache.RESULTS.clear()
    fresh = explore(registry, str(first), "tiny", "", None, 0.5, *DISPLAY)  # computed afresh
    assert fresh is not shown and fresh[1] == shown[1]  # the summary
    np.testing.assert_array_equal(fresh[0].explanation.soap_weights, shown[0].explanation.soap_weights)
    # Each option is part of the key: another ratio, colour map or class set is another answer.
    assert explore(registry, str(first), "tiny", "", None, 0.3, *DISPLAY)[1] != shown[1]
    assert explore(registry, str(first), "tiny", ", ".join(CLASSES[:2]), None, 0.5, *DISPLAY)[1] != shown[1]


def test_changed_weights_are_never_served_stale(registry_and_images):
    registry, first, _copy, _other = registry_and_images
    before = explore(registry, str(first), "tiny", "", None, 0.5, *DISPLAY)
    model = registry.get("tiny").model
    with torch.no_grad():
        model.heads.w_star.mul_(-1.0)  # the classifier flipped in place: the prediction must change with it
    after = explore(registry, str(first), "tiny", "", None, 0.5, *DISPLAY)
    assert after is not before
    cache.RESULTS.clear()
    fresh = explore(registry, str(first), "tiny", "", None, 0.5, *DISPLAY)
    assert fresh is not after
    np.testing.assert_allclose(after[0].explanation.logits_fused, fresh[0].explanation.logits_fused)
    assert not np.allclose(after[0].explanation.logits_fused, before[0].explanation.logits_fused)


def test_the_what_if_views_are_shared_per_view_and_never_stale(registry_and_images):
    registry, first, copy, _other = registry_and_images
    pools = ask_pools(registry, str(first), "tiny", "", 0.5)
    assert ask_pools(registry, str(copy), "tiny", "", 0.5) is pools  # another upload of the same bytes
    cache.RESULTS.clear()
    fresh = ask_pools(registry, str(first), "tiny", "", 0.5)
    assert fresh is not pools and fresh == pools  # the cached answer is the one computed afresh
    queries = ask_queries(registry, str(first), "tiny", "", 0.5)
    assert queries != fresh and ask_queries(registry, str(copy), "tiny", "", 0.5) is queries  # the view is keyed
    assert ask_pools(registry, str(first), "tiny", "", 0.3) != fresh  # so is ρ
    with torch.no_grad():
        registry.get("tiny").model.heads.w_star.mul_(-1.0)
    assert ask_pools(registry, str(first), "tiny", "", 0.5) != fresh  # new weights, a new answer


def test_the_cache_key_names_the_endpoint():
    cache.RESULTS.clear()
    assert cached(("walkthrough", 1), lambda: "w") == "w"
    assert cached(("explore", 1), lambda: "e") == "e"
