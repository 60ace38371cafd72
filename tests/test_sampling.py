"""Raster completion and sampling: known pixels kept, frequencies, seeds, fast path, cancel.

Tiny PixelCNNs on small images keep every test fast; the model works on any
HxW, and so does the sampler.
"""

import threading

import numpy as np
import pytest
import torch

from engine.backend import TorchBackend
from engine.errors import PixelCNNError
from engine.evaluate import nats_per_image
from engine.sampling import (
    Completion,
    Step,
    complete,
    log_prob,
    run_completion,
    sample,
    sigmoid,
)


class FixedLogitsBackend:
    """A model whose pixels are independent with known logits, whatever the image."""

    name = "fixed logits"

    def __init__(self, logit_map: np.ndarray):
        self.logit_map = np.asarray(logit_map, dtype=np.float32)
        self.calls = 0

    def logits(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.broadcast_to(self.logit_map, images.shape).copy()


class CountingBackend:
    """Wraps a backend and counts its full forward passes."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name
        self.calls = 0

    def logits(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.backend.logits(images)


class FullPassTestSession:
    """TEST ONLY, not a cached engine: the IncrementalSession protocol answered by
    one full forward pass per `logits_at`, recording how the sampler drives it."""

    def __init__(self, backend, batch_size: int):
        self.backend = backend
        self.batch_size = batch_size
        self.positions = []
        self.selections = 0
        self.closed = False

    def start(self, canvas: np.ndarray) -> None:
        assert canvas.shape[:2] == (self.batch_size, 1)
        self.canvas = canvas.astype(np.float32).copy()

    def logits_at(self, i: int, j: int) -> np.ndarray:
        self.positions.append((i, j))
        return self.backend.logits(self.canvas)[:, 0, i, j]

    def set_pixel(self, i: int, j: int, values: np.ndarray) -> None:
        self.canvas[:, 0, i, j] = values

    def select(self, rows: np.ndarray) -> None:
        self.selections += 1
        self.canvas = self.canvas[rows]

    def close(self) -> None:
        self.closed = True


class FullPassTestIncrementalBackend:
    """TEST ONLY: a backend offering `incremental`, backed by FullPassTestSession."""

    def __init__(self, backend):
        self.backend = backend
        self.name = f"{backend.name}, full-pass test session"
        self.sessions = []

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.backend.logits(images)

    def incremental(self, batch_size: int) -> FullPassTestSession:
        session = FullPassTestSession(self.backend, batch_size)
        self.sessions.append(session)
        return session


@pytest.fixture
def backend(tiny_model):
    return TorchBackend(tiny_model)


def digit_and_mask(shape=(8, 8), seed=0, unknown_share=0.4):
    rng = np.random.default_rng(seed)
    image = (rng.random(shape) < 0.3).astype(np.uint8)
    known = rng.random(shape) >= unknown_share
    return image, known


def test_known_pixels_are_kept_bit_for_bit(backend):
    image, known = digit_and_mask()
    steps = list(complete(backend, image, known, samples=3, seed=1))

    result = run_completion(backend, image, known, samples=3, seed=1)
    assert (result.images[:, known] == image[known]).all()
    for step in steps:
        assert (step.canvases[:, known] == image[known]).all()


def test_every_unknown_pixel_is_drawn_once_in_raster_order(backend):
    image, known = digit_and_mask()
    steps = list(complete(backend, image, known, samples=2, seed=1))

    expected = [tuple(int(v) for v in p) for p in np.argwhere(~known)]
    assert [step.position for step in steps] == expected
    assert all(step.drawn and step.total == len(expected) for step in steps)
    result = run_completion(backend, image, known, samples=2, seed=1)
    assert set(np.unique(result.images)) <= {0, 1}
    assert not np.isnan(result.prob_maps[:, ~known]).any()
    assert np.isnan(result.prob_maps[:, known]).all()


def test_unknown_pixels_of_the_input_do_not_leak_in(backend):
    image, known = digit_and_mask()
    flipped = np.where(known, image, 1 - image)

    first = run_completion(backend, image, known, samples=2, seed=4)
    second = run_completion(backend, flipped, known, samples=2, seed=4)
    np.testing.assert_array_equal(first.images, second.images)


def test_seeded_runs_repeat_exactly(backend):
    image, known = digit_and_mask()
    first = run_completion(backend, image, known, samples=4, seed=7)
    again = run_completion(backend, image, known, samples=4, seed=7)
    other = run_completion(backend, image, known, samples=4, seed=8)

    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.prob_maps, again.prob_maps)
    assert not np.array_equal(first.images, other.images)


def test_frequencies_match_fixed_probabilities():
    logit_map = np.linspace(-3, 3, 16).reshape(4, 4)
    model = FixedLogitsBackend(logit_map)
    n = 4000
    result = sample(model, n, shape=(4, 4), seed=0)

    # each pixel is Bernoulli(p): its frequency lies within 4.5 standard errors
    p = sigmoid(logit_map)
    frequency = result.images.mean(axis=0)
    assert np.abs(frequency - p).max() < 4.5 * np.sqrt(p * (1 - p) / n).max()
    np.testing.assert_allclose(result.prob_maps, np.broadcast_to(p, (n, 4, 4)), rtol=1e-6)


def test_temperature_divides_the_logit():
    logit_map = np.full((3, 3), 2.0)
    model = FixedLogitsBackend(logit_map)
    n = 4000
    result = sample(model, n, shape=(3, 3), temperature=2.0, seed=0)

    p = sigmoid(1.0)
    np.testing.assert_allclose(result.prob_maps, p, rtol=1e-6)
    assert abs(result.images.mean() - p) < 4.5 * np.sqrt(p * (1 - p) / (9 * n))


def test_known_pixels_run_no_network(backend):
    counting = CountingBackend(backend)
    image, known = digit_and_mask()
    result = run_completion(counting, image, known, samples=2, seed=0, fast=False)

    # one pass per unknown pixel, one to score the finished images
    assert result.steps == (~known).sum()
    assert counting.calls == (~known).sum() + 1


def test_an_all_known_image_makes_no_steps(backend):
    counting = CountingBackend(backend)
    image, _ = digit_and_mask()
    known = np.ones_like(image, dtype=bool)

    steps = list(complete(counting, image, known, samples=2, seed=0))
    result = run_completion(counting, image, known, samples=2, seed=0)
    assert steps == []
    np.testing.assert_array_equal(result.images, np.stack([image, image]))
    np.testing.assert_array_equal(result.observed_log_likelihood, 0.0)


@pytest.mark.parametrize("mode", ["raster", "smc", "importance"])
def test_fast_path_draws_the_same_pixels_as_the_naive_one(backend, mode):
    image, known = digit_and_mask()
    fast_backend = FullPassTestIncrementalBackend(backend)

    naive = run_completion(backend, image, known, 2, mode=mode, candidates=3, seed=5)
    fast = run_completion(fast_backend, image, known, 2, mode=mode, candidates=3, seed=5)
    np.testing.assert_array_equal(fast.images, naive.images)
    np.testing.assert_allclose(fast.log_likelihood, naive.log_likelihood)

    # the session was used, in raster order, and released
    (session,) = fast_backend.sessions
    raster = [i * 8 + j for i, j in session.positions]
    assert raster == sorted(set(raster)) and len(raster) == fast.steps
    assert session.closed


def test_fast_false_ignores_the_session(backend):
    image, known = digit_and_mask()
    fast_backend = FullPassTestIncrementalBackend(backend)
    run_completion(fast_backend, image, known, samples=2, seed=5, fast=False)
    assert fast_backend.sessions == []


@pytest.mark.parametrize("mode", ["raster", "smc"])
def test_cached_torch_session_agrees_with_full_passes(tiny_model, mode):
    from engine.incremental import CachedTorchBackend

    cached = CachedTorchBackend(tiny_model)
    image, known = digit_and_mask(shape=(28, 28), unknown_share=0.05)

    naive = run_completion(cached, image, known, 2, mode=mode, candidates=3, seed=3, fast=False)
    fast = run_completion(cached, image, known, 2, mode=mode, candidates=3, seed=3, fast=True)
    np.testing.assert_array_equal(fast.images, naive.images)


def test_generator_returns_the_completion(backend):
    image, known = digit_and_mask()
    steps = complete(backend, image, known, samples=2, seed=2)

    seen = []
    with pytest.raises(StopIteration) as finished:
        while True:
            seen.append(next(steps))
    result = finished.value.value
    assert isinstance(result, Completion) and all(isinstance(s, Step) for s in seen)
    np.testing.assert_array_equal(result.images, seen[-1].canvases)


def test_steps_are_copies_the_caller_may_keep(backend):
    image, known = digit_and_mask()
    steps = list(complete(backend, image, known, samples=2, seed=2))

    # an early step still shows its own canvas, not the finished one
    assert np.isnan(steps[0].prob_maps).sum() > np.isnan(steps[-1].prob_maps).sum()


def test_cancel_stops_early_and_leaves_no_thread(backend):
    image, known = digit_and_mask()
    fast_backend = FullPassTestIncrementalBackend(backend)
    cancel = threading.Event()
    seen, results = [], []

    def on_step(step):
        seen.append(step.index)
        if step.index == 2:
            cancel.set()

    def work():
        results.append(
            run_completion(fast_backend, image, known, 2, seed=0, on_step=on_step, cancel=cancel)
        )

    before = threading.active_count()
    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert threading.active_count() == before
    assert results == [None] and seen == [0, 1, 2]
    assert fast_backend.sessions[0].closed


def test_cancel_accepts_a_callable(backend):
    image, known = digit_and_mask()
    calls = []
    result = run_completion(
        backend, image, known, seed=0, on_step=calls.append, cancel=lambda: len(calls) >= 3
    )
    assert result is None and len(calls) == 3


def test_log_prob_equals_the_contract_formula(tiny_model, backend):
    images = (np.random.default_rng(0).random((3, 28, 28)) < 0.2).astype(np.uint8)
    log_p, per_pixel = log_prob(backend, images)

    batch = torch.from_numpy(images[:, None].astype(np.float32))
    with torch.no_grad():
        expected = -nats_per_image(tiny_model(batch), batch).numpy()
    np.testing.assert_allclose(log_p, expected, rtol=1e-5)
    np.testing.assert_allclose(per_pixel.sum(axis=(1, 2)), log_p)
    assert per_pixel.shape == (3, 28, 28) and (per_pixel <= 0).all()


def test_completion_scores_its_images(backend):
    image, known = digit_and_mask()
    result = run_completion(backend, image, known, samples=3, seed=1)
    log_p, per_pixel = log_prob(backend, result.images)
    np.testing.assert_allclose(result.log_likelihood, log_p)

    # the observed part: known pixels after the first unknown one in raster order
    first = np.flatnonzero(~known.ravel())[0]
    after = known.ravel() & (np.arange(known.size) > first)
    np.testing.assert_allclose(
        result.observed_log_likelihood, per_pixel.reshape(3, -1)[:, after].sum(axis=1)
    )


def test_unconditional_sampling_fills_every_pixel(backend):
    result = sample(backend, 2, shape=(6, 6), seed=0)
    assert result.images.shape == (2, 6, 6) and result.steps == 36
    assert not np.isnan(result.prob_maps).any()


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.0},
        {"temperature": float("nan")},
        {"mode": "gibbs"},
        {"samples": 0},
        {"candidates": 0},
        {"seed": 1.5},
        {"known_mask": np.ones((5, 5), dtype=bool)},
        {"image": np.full((8, 8), 2)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_bad_requests_raise_before_any_step(backend, change):
    image, known = digit_and_mask()
    arguments = {"image": image, "known_mask": known, **change}
    with pytest.raises(PixelCNNError):
        complete(backend, **arguments)
