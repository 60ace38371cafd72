"""Cached sampling in PyTorch is exact: the same logits as the full network at every
step and the same pixels as naive sampling, for several sizes and kernel shapes."""

import numpy as np
import pytest
import torch

from engine.errors import PixelCNNError
from engine.incremental import CachedTorchBackend, TorchIncrementalSession
from engine.model import ModelConfig, build_model

TOLERANCE = 1e-4
CONFIGS = {
    "c8-b2-default-kernels": ModelConfig(channels=8, blocks=2),
    "c12-b3-tall-wide-kernels": ModelConfig(
        channels=12, blocks=3, v_kernel=(3, 5), h_kernel=(3, 3)
    ),
}
# kernels one row high or one column wide leave some caches empty
EDGE_CONFIGS = {
    "rows-of-one": ModelConfig(channels=4, blocks=1, v_kernel=(1, 3), h_kernel=(1, 1)),
    "column-of-one": ModelConfig(channels=4, blocks=2, v_kernel=(2, 1), h_kernel=(1, 3)),
}
H = W = 28


def make_model(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(config).eval()

    # larger biases than the default init, so logits spread and draws vary
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.bias.uniform_(-0.5, 0.5)
    return model


def full_logits(model, canvas: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(canvas))[:, 0].numpy()


def draw(logits: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    return (uniforms < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def sample_cached(session, canvas, uniforms, known=None):
    """Raster sampling through a session: (canvas, logits of every visited step)."""
    canvas = canvas.copy()
    logits = np.full(canvas[:, 0].shape, np.nan, dtype=np.float32)
    session.start(canvas)
    for i in range(H):
        for j in range(W):
            if known is not None and known[i, j]:
                continue
            logits[:, i, j] = session.logits_at(i, j)
            canvas[:, 0, i, j] = draw(logits[:, i, j], uniforms[:, i, j])
            session.set_pixel(i, j, canvas[:, 0, i, j])
    return canvas, logits


def sample_naive(model, canvas, uniforms, known=None):
    """The reference: one full forward pass per unknown pixel."""
    canvas = canvas.copy()
    for i in range(H):
        for j in range(W):
            if known is not None and known[i, j]:
                continue
            logits = full_logits(model, canvas)[:, i, j]
            canvas[:, 0, i, j] = draw(logits, uniforms[:, i, j])
    return canvas


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request):
    return make_model(CONFIGS[request.param])


ALL_CONFIGS = {**CONFIGS, **EDGE_CONFIGS}


@pytest.mark.parametrize("config", list(ALL_CONFIGS.values()), ids=list(ALL_CONFIGS))
def test_every_step_logit_matches_the_full_network(config):
    model = make_model(config)
    uniforms = np.random.default_rng(1).random((3, H, W))
    canvas, step_logits = sample_cached(
        TorchIncrementalSession(model, 3), np.zeros((3, 1, H, W), np.float32), uniforms
    )

    # logit (i, j) depends only on earlier pixels, so one pass over the finished
    # canvas gives what the network said at every step
    gap = np.abs(full_logits(model, canvas) - step_logits).max()
    assert gap < TOLERANCE
    assert 0.05 < canvas.mean() < 0.95  # the draws were not all alike


def test_draws_the_same_pixels_as_naive_sampling():
    # 784 full passes: one size here; the completion test below compares both
    model = make_model(CONFIGS["c8-b2-default-kernels"])
    uniforms = np.random.default_rng(2).random((2, H, W))
    blank = np.zeros((2, 1, H, W), np.float32)

    cached, _ = sample_cached(TorchIncrementalSession(model, 2), blank, uniforms)
    naive = sample_naive(model, blank, uniforms)
    np.testing.assert_array_equal(cached, naive)


def test_completion_keeps_known_pixels_and_matches_naive(model):
    rng = np.random.default_rng(3)
    image = (rng.random((2, 1, H, W)) < 0.3).astype(np.float32)
    known = np.ones((H, W), bool)
    known[10:18, 4:24] = False  # a hole in the middle
    known[25, 3] = known[27, 27] = False  # and single pixels late in raster order
    uniforms = rng.random((2, H, W))

    cached, step_logits = sample_cached(TorchIncrementalSession(model, 2), image, uniforms, known)
    naive = sample_naive(model, image, uniforms, known)
    np.testing.assert_array_equal(cached, naive)
    np.testing.assert_array_equal(cached[:, 0][:, known], image[:, 0][:, known])
    gap = np.abs(full_logits(model, cached)[:, ~known] - step_logits[:, ~known]).max()
    assert gap < TOLERANCE


def test_select_reorders_and_repeats_every_cache(model):
    uniforms = np.random.default_rng(4).random((3, H, W))
    session = TorchIncrementalSession(model, 3)
    canvas = np.zeros((3, 1, H, W), np.float32)
    logits = np.zeros((3, H, W), np.float32)
    session.start(canvas)

    # stop mid-row, so the row caches and the current row both hold state
    canvas, logits = sample_reordering_at(
        session, canvas, logits, uniforms, np.array([2, 0, 2, 1]), 13 * W + 5
    )

    assert np.abs(full_logits(model, canvas) - logits).max() < TOLERANCE
    # the repeated particle went on identically, from identical uniforms
    np.testing.assert_array_equal(canvas[0], canvas[2])


def sample_reordering_at(session, canvas, logits, uniforms, rows, step):
    """Samples every pixel through `session`, applying select(rows) before `step`."""
    for k in range(H * W):
        i, j = divmod(k, W)
        if k == step:
            session.select(rows)
            canvas, logits, uniforms = canvas[rows], logits[rows], uniforms[rows]
        logits[:, i, j] = session.logits_at(i, j)
        canvas[:, 0, i, j] = draw(logits[:, i, j], uniforms[:, i, j])
        session.set_pixel(i, j, canvas[:, 0, i, j])
    return canvas, logits


def test_pixels_skipped_on_the_way_get_their_logits_too(model):
    # known pixels make no calls; asking past them steps through them
    blank = np.zeros((2, 1, H, W), np.float32)
    session = TorchIncrementalSession(model, 2)
    session.start(blank)
    later = session.logits_at(3, 7)
    earlier = session.logits_at(1, 2)

    expected = full_logits(model, blank)
    assert np.abs(expected[:, 3, 7] - later).max() < TOLERANCE
    assert np.abs(expected[:, 1, 2] - earlier).max() < TOLERANCE


def test_setting_a_pixel_that_later_steps_read_raises(model):
    session = TorchIncrementalSession(model, 1)
    session.start(np.zeros((1, 1, H, W), np.float32))
    session.logits_at(5, 0)

    # (4, 27) was read by the row step of row 5; setting it to its value is harmless
    session.set_pixel(4, 27, np.zeros(1))
    with pytest.raises(ValueError, match="raster order"):
        session.set_pixel(4, 27, np.ones(1))
    session.set_pixel(5, 0, np.ones(1))  # not read yet


def test_misuse_is_reported():
    session = TorchIncrementalSession(make_model(CONFIGS["c8-b2-default-kernels"]), 1)
    with pytest.raises(ValueError, match="start"):
        session.logits_at(0, 0)
    with pytest.raises(PixelCNNError, match=r"\[N, 1, 28, 28\]"):
        session.start(np.zeros((1, 28, 28), np.float32))
    session.start(np.zeros((1, 1, H, W), np.float32))
    with pytest.raises(ValueError, match="outside"):
        session.logits_at(28, 0)


def test_cached_backend_refuses_the_masked_model():
    masked = build_model(ModelConfig(arch="masked", channels=4, blocks=1))
    with pytest.raises(PixelCNNError, match="two-stream"):
        CachedTorchBackend(masked)


def test_backend_logits_are_the_full_pass(model):
    backend = CachedTorchBackend(model)
    images = (np.random.default_rng(5).random((2, 1, H, W)) < 0.5).astype(np.float32)
    np.testing.assert_allclose(backend.logits(images)[:, 0], full_logits(model, images))
    assert "cached" in backend.name


@pytest.mark.parametrize("mode", ["raster", "smc"])
def test_sampler_draws_the_same_completions_fast_and_naive(mode):
    from engine.sampling import complete

    backend = CachedTorchBackend(make_model(CONFIGS["c8-b2-default-kernels"]))
    image = (np.random.default_rng(6).random((H, W)) < 0.3).astype(np.uint8)
    known = np.ones((H, W), bool)
    known[12:16] = False

    results = []
    for fast in (True, False):
        steps = complete(
            backend, image, known, samples=2, seed=7, mode=mode, candidates=3, fast=fast
        )
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                results.append(stop.value)
                break
    np.testing.assert_array_equal(results[0].images, results[1].images)
    np.testing.assert_allclose(results[0].log_likelihood, results[1].log_likelihood, rtol=1e-6)
