"""The studio window and main.py: models, messages, menus, settings, start and quit.

Every user mistake must end in a message that says what to do while the
window keeps running; settings go to a temporary INI file, never the user's.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Qt

from engine.masks import named_mask
from gui.main_window import MainWindow
from gui.settings import Settings, open_settings

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = ROOT / "assets" / "pixelcnn.onnx"


@pytest.fixture
def checkpoint(tmp_path, tiny_model, tiny_config):
    from engine.checkpoint import save_checkpoint

    path = tmp_path / "tiny.pt"
    save_checkpoint(path, {"config": tiny_config.to_dict(), "model": tiny_model.state_dict()})
    return path


@pytest.fixture
def settings_path(tmp_path):
    return tmp_path / "settings.ini"


def make_window(qtbot, settings_path, model_path, extra_views=False):
    settings = Settings(open_settings(settings_path))
    window = MainWindow(settings, model_path, "cpu", extra_views=extra_views)
    qtbot.addWidget(window)
    window.panel.new_seed_box.setChecked(False)
    window.show()
    qtbot.waitExposed(window)
    return window


@pytest.fixture
def window(qtbot, settings_path, checkpoint):
    widget = make_window(qtbot, settings_path, checkpoint)
    yield widget
    widget.panel.shutdown()


def shown_messages(window) -> list[str]:
    return [box.text() for box in window.findChildren(QtWidgets.QMessageBox) if box.isVisible()]


def test_window_names_the_model_and_the_provider(window, checkpoint):
    assert window.model is not None
    assert checkpoint.name in window.model_label.text()
    assert "CPU" in window.model_label.text()


def test_window_shows_the_test_figure_saved_with_the_model(
    qtbot, settings_path, tmp_path, tiny_model, tiny_config
):
    from engine.checkpoint import save_checkpoint

    measured = tmp_path / "measured.pt"
    test = {"nats_per_image": 83.456, "bits_per_dim": 0.1536, "digits": 10000}
    state = {"config": tiny_config.to_dict(), "model": tiny_model.state_dict(), "test": test}
    save_checkpoint(measured, state)

    window = make_window(qtbot, settings_path, measured)
    assert "83.46 nats/digit" in window.model_label.text()
    assert "10,000" in window.model_label.toolTip()
    window.panel.shutdown()


def test_window_shows_no_figure_for_a_model_never_measured(window):
    assert "nats" not in window.model_label.text()
    assert "No test figures" in window.model_label.toolTip()


def test_missing_model_shows_a_message_and_another_can_be_opened(qtbot, settings_path, checkpoint):
    window = make_window(qtbot, settings_path, checkpoint.parent / "absent.onnx")

    assert window.model is None
    messages = shown_messages(window)
    assert len(messages) == 1 and "does not exist" in messages[0]
    assert "Traceback" not in messages[0]

    assert window.open_model(checkpoint)
    assert window.model.path == checkpoint


def test_damaged_model_file_shows_a_message(qtbot, settings_path, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not a protobuf" * 10)
    window = make_window(qtbot, settings_path, broken)

    assert window.model is None
    assert any("not a readable ONNX model" in text for text in shown_messages(window))
    assert window.isVisible()


def test_complete_with_nothing_masked_shows_what_to_do(window):
    window.panel.complete_action.trigger()

    assert any("Nothing is masked" in text for text in shown_messages(window))
    assert not window.panel.is_running()


def test_undo_and_redo_shortcuts(qtbot, window):
    canvas = window.canvas
    qtbot.waitUntil(lambda: canvas.pixel_to_widget(27, 27).x() > 200)
    qtbot.mousePress(canvas.viewport(), Qt.LeftButton, pos=canvas.pixel_to_widget(6, 6))
    qtbot.mouseRelease(canvas.viewport(), Qt.LeftButton, pos=canvas.pixel_to_widget(6, 6))
    assert window.drawing.image[6, 6] == 1

    window.activateWindow()
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier)
    assert window.drawing.image.sum() == 0
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert window.drawing.image[6, 6] == 1 and window.drawing.image.sum() == 1


@pytest.mark.parametrize("name", ["bottom", "right", "centre"])
def test_mask_presets_set_the_named_mask(window, name):
    action = next(a for a in window.preset_actions if a.data() == name)
    action.trigger()

    np.testing.assert_array_equal(window.drawing.unknown, named_mask(name))
    np.testing.assert_array_equal(window.canvas.mask_item.image, named_mask(name))


def test_random_pixels_preset_hides_half_the_pixels(window):
    next(a for a in window.preset_actions if a.data() == "random").trigger()
    assert window.drawing.unknown.sum() == 392


def test_random_digit_loads_a_shipped_digit_and_keeps_the_mask(window):
    window.drawing.set_mask(named_mask("bottom"))
    window.random_digit_action.trigger()

    assert window.drawing.image.sum() > 20
    np.testing.assert_array_equal(window.drawing.unknown, named_mask("bottom"))
    assert window.drawing.can_undo()


def test_completion_in_the_window_and_a_click_takes_it_back(qtbot, window):
    window.random_digit_action.trigger()
    window.drawing.mask_rectangle(20, 0, 24, 27)
    before = window.drawing.image.copy()
    window.panel.samples_box.setCurrentIndex(window.panel.samples_box.findData(1))

    with qtbot.waitSignal(window.panel.runner.sigFinished, timeout=20_000) as blocker:
        window.panel.complete_action.trigger()
    completion = blocker.args[0].completion
    assert "pixels/s" in window.rate_label.text()

    qtbot.mouseClick(window.panel.grid.tiles[0].view.viewport(), Qt.LeftButton)
    np.testing.assert_array_equal(window.drawing.image, completion.images[0])
    assert not window.drawing.unknown.any()

    window.undo_action.trigger()
    np.testing.assert_array_equal(window.drawing.image, before)


def test_closing_in_the_middle_of_sampling_leaves_no_thread(qtbot, settings_path, checkpoint):
    window = make_window(qtbot, settings_path, checkpoint)
    window.random_digit_action.trigger()
    window.drawing.set_mask(named_mask("bottom"))
    window.panel.speed_slider.setValue(2)  # five pixels a second

    with qtbot.waitSignal(window.panel.runner.sigStep, timeout=10_000):
        window.panel.complete_action.trigger()
    threads = window.panel.runner.findChildren(QtCore.QThread)
    assert threads and threads[0].isRunning()

    window.close()
    assert not window.panel.is_running()
    assert not any(thread.isRunning() for thread in threads)


def test_settings_persist_between_windows(qtbot, settings_path, checkpoint):
    first = make_window(qtbot, settings_path, checkpoint)
    first.tool_actions["mask_brush"].trigger()
    first.brush_box.setValue(4)
    first.grid_action.trigger()
    first.panel.samples_box.setCurrentIndex(first.panel.samples_box.findData(9))
    first.panel.temperature_box.setValue(0.8)
    first.panel.speed_slider.setValue(3)
    first.resize(first.minimumSizeHint().width() + 10, 560)
    size = first.size()
    first.close()

    second = make_window(qtbot, settings_path, checkpoint)
    assert second.canvas.tool == "mask_brush"
    assert second.tool_actions["mask_brush"].isChecked()
    assert second.canvas.brush_size == second.brush_box.value() == 4
    assert not second.grid_action.isChecked() and not second.canvas.grid_item.isVisible()
    assert second.panel.samples_box.currentData() == 9
    assert second.panel.temperature_box.value() == pytest.approx(0.8)
    assert second.panel.speed_slider.value() == 3
    assert second.size() == size
    second.close()


def test_open_image_with_a_bad_file_shows_a_message(window, tmp_path, monkeypatch):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    monkeypatch.setattr(
        QtWidgets.QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(bad), "")
    )
    window.open_image_action.trigger()

    assert any("not an image" in text for text in shown_messages(window))


def test_open_image_previews_and_loads_the_digit(qtbot, window, tmp_path, monkeypatch):
    # a black bar on white paper: the digit is the bar, inverted to ink
    picture = np.full((200, 160), 255, np.uint8)
    picture[40:160, 70:90] = 0
    path = tmp_path / "bar.png"
    Image.fromarray(picture).save(path)
    monkeypatch.setattr(
        QtWidgets.QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), "")
    )

    def accept_preview():
        dialog = QtWidgets.QApplication.activeModalWidget()
        assert dialog is not None and dialog.windowTitle() == "Open image"
        dialog.accept()

    QtCore.QTimer.singleShot(300, accept_preview)
    window.open_image_action.trigger()

    ink_rows = np.flatnonzero(window.drawing.image.any(axis=1))
    assert window.drawing.image.sum() > 20
    assert ink_rows[-1] - ink_rows[0] >= 15  # a tall bar, fitted like MNIST


def test_save_drawing_writes_a_png_that_loads_back(window, tmp_path, monkeypatch):
    from engine.images import load_digit

    target = tmp_path / "mine.png"
    monkeypatch.setattr(
        QtWidgets.QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(target), "")
    )
    window.random_digit_action.trigger()
    window.save_drawing_action.trigger()

    np.testing.assert_array_equal(load_digit(target), window.drawing.image)


def test_the_explanatory_views_become_tabs_and_the_last_tab_is_kept(
    qtbot, settings_path, checkpoint
):
    window = make_window(qtbot, settings_path, checkpoint, extra_views=True)
    titles = [window.tabs.tabText(k) for k in range(window.tabs.count())]

    assert titles[0] == "Draw and complete"
    assert len(titles) > 1
    window.tabs.setCurrentIndex(1)
    window.close()
    assert window.tabs.count() == 1

    again = make_window(qtbot, settings_path, checkpoint, extra_views=True)
    assert again.tabs.currentIndex() == 1
    again.close()


# a common small laptop screen, less the window frame
SMALL_SCREEN_WIDTH = 1024 - 24


def test_the_window_with_every_tab_fits_a_1024_pixel_wide_screen(qtbot, settings_path, checkpoint):
    window = make_window(qtbot, settings_path, checkpoint, extra_views=True)
    assert window.tabs.count() > 1
    needed = {
        window.tabs.tabText(k): window.tabs.widget(k).minimumSizeHint().width()
        for k in range(window.tabs.count())
    }
    window.close()

    assert max(needed.values()) <= SMALL_SCREEN_WIDTH, needed
    assert window.minimumSizeHint().width() <= SMALL_SCREEN_WIDTH


def test_main_starts_and_quits_in_process(qtbot, settings_path, checkpoint):
    import main

    assert main.main(["--model", str(checkpoint), "--settings", str(settings_path),
                      "--quit-after", "300"]) == 0  # fmt: skip
    assert settings_path.exists()


def test_main_smoke_run_in_a_subprocess_completes_and_quits(tmp_path, checkpoint):
    model = SHIPPED_MODEL if SHIPPED_MODEL.exists() else checkpoint
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    command = [sys.executable, str(ROOT / "main.py"), "--model", str(model), "--device", "cpu"]
    command += ["--settings", str(tmp_path / "s.ini"), "--demo", "--quit-after", "2500"]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "QThread" not in done.stderr
    assert f"opened {model.name}" in done.stderr


def test_installed_pyside_keeps_its_references_to_none_and_true(qapp):
    # PySide6 6.12.0 drops a reference to None or True on every emit and every
    # void method call, and CPython 3.11 then aborts mid-sampling
    # ("none_dealloc"); pyproject.toml excludes it, and this guards the pin
    from PySide6 import QtCore

    class Probe(QtCore.QObject):
        sigProbe = QtCore.Signal()

    probe = Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(64):
        probe.setObjectName("probe")
        probe.sigProbe.emit()

    assert none_before - sys.getrefcount(None) < 32
    assert true_before - sys.getrefcount(True) < 32


def test_model_loader_refuses_other_files_with_what_to_do(tmp_path):
    from engine.errors import PixelCNNError
    from gui.model_loader import load_model_file

    notes = tmp_path / "model.txt"
    notes.write_text("weights")
    with pytest.raises(PixelCNNError, match="neither an ONNX model"):
        load_model_file(notes)
    with pytest.raises(PixelCNNError, match="Open model"):
        load_model_file(tmp_path / "absent.pt")
    with pytest.raises(PixelCNNError, match="device 'tpu' is unknown"):
        load_model_file(notes, "tpu")


def test_a_checkpoint_offers_both_samplers(checkpoint):
    from gui.model_loader import load_model_file

    loaded = load_model_file(checkpoint, "cpu")

    assert loaded.fast_sampler and hasattr(loaded.sampling_backend(True), "incremental")
    assert not hasattr(loaded.sampling_backend(False), "incremental")
