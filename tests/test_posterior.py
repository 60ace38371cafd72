"""Likelihood-aware completion against an exact posterior on a model small enough to enumerate.

The toy model is a real autoregressive model of 3x3 binary images: one logit
per pixel and per value of every pixel before it, 511 in all. Enumerating
its 512 images gives p(hole | every known pixel) exactly.
"""

import itertools
from collections import Counter

import numpy as np
import pytest

from engine.sampling import complete, log_prob, run_completion

SHAPE = (3, 3)
# hidden: (0,1), (0,2), (1,0); known before the hole: (0,0); after it: the rest
HOLE = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
IMAGE = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.uint8)
COMPLETIONS = 4000


class TableBackend:
    """An exact autoregressive model: logit of pixel k looked up by the bits before it."""

    name = "logit table"

    def __init__(self, shape, seed: int, scale: float):
        rng = np.random.default_rng(seed)
        self.tables = [rng.normal(0.0, scale, 2**k) for k in range(shape[0] * shape[1])]

    def logits(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.int64)
        logits = np.empty(flat.shape, dtype=np.float32)
        prefix = np.zeros(len(images), dtype=np.int64)
        for k, table in enumerate(self.tables):
            logits[:, k] = table[prefix]
            prefix = 2 * prefix + flat[:, k]
        return logits.reshape(images.shape)


@pytest.fixture(scope="module")
def model():
    return TableBackend(SHAPE, seed=1, scale=2.5)


def every_image() -> np.ndarray:
    bits = itertools.product((0, 1), repeat=SHAPE[0] * SHAPE[1])
    return np.array(list(bits), dtype=np.uint8).reshape(-1, *SHAPE)


def exact_distribution(model, condition: np.ndarray) -> dict:
    """p(hole values | the pixels of IMAGE where condition is True), by enumeration."""
    images = every_image()
    log_p, _ = log_prob(model, images)
    matching = (images[:, condition] == IMAGE[condition]).all(axis=1)
    weights = np.exp(log_p[matching])
    distribution = Counter()
    for hole, weight in zip(images[matching][:, HOLE], weights / weights.sum(), strict=True):
        distribution[tuple(hole)] += weight
    return distribution


def total_variation(images: np.ndarray, exact: dict) -> float:
    counts = Counter(tuple(image[HOLE]) for image in images)
    return 0.5 * sum(abs(counts.get(key, 0) / len(images) - p) for key, p in exact.items())


def posterior_tv(model, mode: str, candidates: int) -> float:
    result = run_completion(
        model, IMAGE, ~HOLE, samples=COMPLETIONS, mode=mode, candidates=candidates, seed=0
    )
    assert (result.images[:, ~HOLE] == IMAGE[~HOLE]).all()
    return total_variation(result.images, exact_distribution(model, ~HOLE))


def test_toy_model_is_a_normalized_distribution(model):
    log_p, _ = log_prob(model, every_image())
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-9)


def test_toy_posterior_differs_from_what_raster_order_sees(model):
    # the known pixels after the hole carry information: the test below is not vacuous
    raster_target = exact_distribution(model, ~HOLE & (np.arange(9).reshape(SHAPE) < 1))
    posterior = exact_distribution(model, ~HOLE)
    tv = 0.5 * sum(abs(posterior[key] - raster_target[key]) for key in posterior)
    assert tv > 0.4


# With 4000 completions over 8 hole values the sampling error alone keeps the
# total variation near 0.5 * sum(sqrt(p(1-p)/4000)) < 0.03; seeds are fixed,
# so each figure below is one deterministic number, not a flaky draw.


def test_raster_completion_follows_only_the_pixels_before_the_hole(model):
    result = run_completion(model, IMAGE, ~HOLE, samples=COMPLETIONS, seed=0)
    before = ~HOLE & (np.arange(9).reshape(SHAPE) < 1)
    assert total_variation(result.images, exact_distribution(model, before)) < 0.05
    assert total_variation(result.images, exact_distribution(model, ~HOLE)) > 0.4


def test_smc_approaches_the_exact_posterior(model):
    assert posterior_tv(model, "smc", candidates=128) < 0.05


def test_importance_resampling_approaches_the_exact_posterior(model):
    assert posterior_tv(model, "importance", candidates=128) < 0.05


def test_more_candidates_come_closer(model):
    few, many = posterior_tv(model, "smc", 4), posterior_tv(model, "smc", 64)
    assert many < few / 3


def test_weighted_modes_raise_the_observed_likelihood(model):
    raster = run_completion(model, IMAGE, ~HOLE, samples=500, seed=0)
    smc = run_completion(model, IMAGE, ~HOLE, samples=500, mode="smc", candidates=16, seed=0)
    assert smc.observed_log_likelihood.mean() > raster.observed_log_likelihood.mean() + 1.0


def test_weighted_modes_score_the_known_pixels_after_the_hole(model):
    steps = list(complete(model, IMAGE, ~HOLE, samples=4, mode="importance", seed=0))

    scored = [step.position for step in steps if not step.drawn]
    drawn = [step.position for step in steps if step.drawn]
    assert drawn == [(0, 1), (0, 2), (1, 0)]
    assert scored == [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert not any(step.resampled for step in steps)


def test_smc_resamples_only_at_row_ends(model):
    steps = list(complete(model, IMAGE, ~HOLE, samples=200, mode="smc", candidates=16, seed=0))

    resampled = [step.position for step in steps if step.resampled]
    assert resampled and all(j == SHAPE[1] - 1 for _, j in resampled)


def test_smc_resampling_copies_particles_within_their_completion(model):
    candidates = 16
    steps = list(
        complete(model, IMAGE, ~HOLE, samples=50, mode="smc", candidates=candidates, seed=0)
    )
    k = next(k for k, step in enumerate(steps) if step.resampled)

    # the row-end pixel is a known one, so only resampling changed the canvases
    before = steps[k - 1].canvases.reshape(50, candidates, -1)
    after = steps[k].canvases.reshape(50, candidates, -1)
    for own, chosen in zip(before, after, strict=True):
        assert {tuple(row) for row in chosen} <= {tuple(row) for row in own}
    # a resampled completion starts again with equal weights
    assert (steps[k].log_weights.reshape(50, candidates) == 0).all(axis=1).any()


def test_weighted_modes_spare_candidates_when_nothing_follows_the_hole(model):
    known = np.ones(SHAPE, dtype=bool)
    known[2] = False  # the last row: no known pixel comes after it
    steps = list(complete(model, IMAGE, known, samples=5, mode="smc", candidates=16, seed=0))
    assert all(step.candidates == 1 and len(step.canvases) == 5 for step in steps)
