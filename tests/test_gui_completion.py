"""The completion panel and its worker thread, with a tiny untrained model.

A run must keep every known pixel, fill every masked one, stop when asked,
step one pixel at a time while paused, and never leave a thread behind.
"""

import time

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from engine.backend import TorchBackend
from engine.errors import PixelCNNError
from gui.completion_panel import PENDING, SPEED_DELAYS, CompletionPanel
from gui.settings import Settings, open_settings
from gui.worker import shown_particles


@pytest.fixture
def panel(qtbot, tmp_path):
    widget = CompletionPanel(Settings(open_settings(tmp_path / "settings.ini")))
    qtbot.addWidget(widget)
    widget.resize(600, 700)
    widget.show()
    widget.new_seed_box.setChecked(False)
    widget.speed_slider.setValue(len(SPEED_DELAYS) - 1)
    yield widget
    assert widget.shutdown()


@pytest.fixture
def backend(tiny_model):
    return TorchBackend(tiny_model)


def digit_and_hole():
    """A stroke of ink with a hole over rows 18-21, columns 6-17 (48 pixels)."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 13:15] = 1
    image[20, 6:20] = 1
    unknown = np.zeros((28, 28), bool)
    unknown[18:22, 6:18] = True
    return image, unknown


def finish(qtbot, panel, timeout=20_000):
    with qtbot.waitSignal(panel.runner.sigFinished, timeout=timeout) as blocker:
        pass
    qtbot.waitUntil(lambda: not panel.is_running(), timeout=5000)
    return blocker.args[0]


def test_completion_keeps_known_pixels_and_fills_every_masked_one(qtbot, panel, backend):
    image, unknown = digit_and_hole()
    panel.samples_box.setCurrentIndex(panel.samples_box.findData(4))

    panel.start(backend, image, unknown)
    result = finish(qtbot, panel)

    completion = result.completion
    assert completion.images.shape == (4, 28, 28)
    for k in range(4):
        np.testing.assert_array_equal(completion.images[k][~unknown], image[~unknown])
        assert set(np.unique(completion.images[k][unknown])) <= {0, 1}
        assert not np.isnan(completion.prob_maps[k][unknown]).any()
        assert np.isfinite(completion.log_likelihood[k]) and completion.log_likelihood[k] < 0
    # every tile shows its finished completion: nothing pending, a caption with log p
    for tile in panel.grid.tiles:
        assert PENDING not in tile.view.codes
        assert "log p" in tile.caption.text()
    assert panel.progress.value() == panel.progress.maximum() == int(unknown.sum())


def test_likelihood_aware_mode_keeps_known_pixels(qtbot, panel, backend):
    image, unknown = digit_and_hole()
    panel.samples_box.setCurrentIndex(panel.samples_box.findData(1))
    panel.mode_box.setCurrentIndex(panel.mode_box.findData("smc"))
    panel.candidates_box.setValue(3)

    panel.start(backend, image, unknown)
    completion = finish(qtbot, panel).completion

    assert completion.mode == "smc"
    np.testing.assert_array_equal(completion.images[0][~unknown], image[~unknown])
    assert np.isfinite(completion.observed_log_likelihood[0])


def test_fast_and_naive_samplers_draw_the_same_pixels(qtbot, panel, backend, tiny_model):
    from gui.model_loader import cached_backend

    cached = cached_backend(tiny_model)
    image, unknown = digit_and_hole()
    panel.seed_box.setValue(7)
    runs = []
    for sampler in ("fast", "naive"):
        panel.sampler_box.setCurrentIndex(panel.sampler_box.findData(sampler))
        panel.start(backend, image, unknown, cached)
        runs.append(finish(qtbot, panel).completion.images)
        assert panel.sampler_text.startswith("the cached session") == (sampler == "fast")

    np.testing.assert_array_equal(runs[0], runs[1])


def test_stop_mid_way_ends_the_run_and_its_thread(qtbot, panel, backend):
    image, unknown = digit_and_hole()
    panel.speed_slider.setValue(SPEED_DELAYS.index(0.02))

    with qtbot.waitSignal(panel.runner.sigStep, timeout=10_000):
        panel.start(backend, image, unknown)
    panel.stop_action.trigger()
    result = finish(qtbot, panel)

    assert result.completion is None
    assert panel.result is None
    assert 0 < panel.progress.value() < int(unknown.sum())
    assert panel.complete_action.isEnabled()


def test_paused_run_advances_one_pixel_per_step(qtbot, panel, backend):
    image, unknown = digit_and_hole()
    panel.pause_action.setChecked(True)
    panel.start(backend, image, unknown)
    qtbot.wait(200)
    assert panel.progress.value() == 0

    seen = []
    for _ in range(3):
        with qtbot.waitSignal(panel.runner.sigStep, timeout=10_000) as blocker:
            panel.step_action.trigger()
        seen.append(blocker.args[0].step.index)

    assert seen == [0, 1, 2]
    first = blocker.args[0].step
    assert first.position == (18, 8)
    panel.pause_action.setChecked(False)
    assert finish(qtbot, panel).completion is not None


def test_steps_reach_the_gui_throttled(qtbot, panel, backend):
    image, unknown = digit_and_hole()
    unknown[18:22, :] = True  # 112 pixels
    reports = []
    panel.runner.sigStep.connect(reports.append)

    started = time.perf_counter()
    panel.start(backend, image, unknown)
    finish(qtbot, panel)
    seconds = time.perf_counter() - started

    # about 30 a second at most, plus the final one, whatever the sampler's speed
    assert 1 <= len(reports) <= seconds * 30 + 3
    assert reports[-1].step.index == reports[-1].step.total - 1


def test_complete_with_nothing_masked_says_what_to_do(panel, backend):
    image, _ = digit_and_hole()
    with pytest.raises(PixelCNNError, match="Nothing is masked"):
        panel.start(backend, image, np.zeros((28, 28), bool))
    assert not panel.is_running()


def test_complete_without_a_model_says_what_to_do(panel):
    image, unknown = digit_and_hole()
    with pytest.raises(PixelCNNError, match="Open model"):
        panel.start(None, image, unknown)


def test_clicking_a_tile_sends_its_completion_to_the_canvas(qtbot, panel, backend):
    image, unknown = digit_and_hole()
    panel.start(backend, image, unknown)
    completion = finish(qtbot, panel).completion

    tile = panel.grid.tiles[1]
    with qtbot.waitSignal(panel.sigUseImage) as blocker:
        qtbot.mouseClick(tile.view.viewport(), Qt.LeftButton)
    np.testing.assert_array_equal(blocker.args[0], completion.images[1])


def test_saves_a_png_grid_and_an_animated_gif(qtbot, panel, backend, tmp_path):
    image, unknown = digit_and_hole()
    panel.samples_box.setCurrentIndex(panel.samples_box.findData(4))
    panel.start(backend, image, unknown)
    finish(qtbot, panel)

    panel.save_grid(tmp_path / "grid.png")
    panel.save_gif(tmp_path / "run.gif")

    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 * 28 * 4 + 2, 2 * 28 * 4 + 2)
    with Image.open(tmp_path / "run.gif") as gif:
        assert gif.n_frames > 2


def test_saving_before_any_run_says_what_to_do(panel, tmp_path):
    with pytest.raises(PixelCNNError, match="Complete"):
        panel.save_grid(tmp_path / "grid.png")


def test_the_shown_particle_is_the_best_weighted_candidate():
    class FakeStep:
        candidates = 3
        log_weights = np.array([-5.0, -1.0, -3.0, -0.5, -9.0, -2.0])

    np.testing.assert_array_equal(shown_particles(FakeStep()), [1, 3])


def test_panel_settings_persist(qtbot, tmp_path):
    store = tmp_path / "settings.ini"
    first = CompletionPanel(Settings(open_settings(store)))
    qtbot.addWidget(first)
    first.samples_box.setCurrentIndex(first.samples_box.findData(16))
    first.temperature_box.setValue(0.7)
    first.speed_slider.setValue(2)
    first.mode_box.setCurrentIndex(first.mode_box.findData("importance"))
    first.sampler_box.setCurrentIndex(first.sampler_box.findData("naive"))
    first.save_settings()
    first.settings.sync()

    second = CompletionPanel(Settings(open_settings(store)))
    qtbot.addWidget(second)
    assert second.samples_box.currentData() == 16
    assert second.temperature_box.value() == pytest.approx(0.7)
    assert second.speed_slider.value() == 2
    assert second.mode_box.currentData() == "importance"
    assert second.sampler_box.currentData() == "naive"
    assert second.candidates_box.isEnabled()
