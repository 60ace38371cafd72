"""The studio's main window: the canvas, the completion panel, menus and the status bar.

It holds the open model and the drawing, turns menu actions into edits and
runs, shows every user-caused error as a message (never a traceback), and
adds the explanatory views of gui.views as tabs when that module is there.
"""

import logging
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Qt

from engine.errors import PixelCNNError
from gui.canvas import DigitCanvas
from gui.completion_panel import CompletionPanel
from gui.drawing import TOOLS, Drawing
from gui.model_loader import LoadedModel, load_model_file

log = logging.getLogger(__name__)

TOOL_LABELS = {
    "pen": ("&Pen", "P", "Draw ink; right button erases"),
    "eraser": ("&Eraser", "E", "Erase ink; right button draws"),
    "mask_brush": ("&Mask brush", "M", "Mark pixels unknown; right button unmarks"),
    "mask_rect": ("Mask &rectangle", "R", "Drag a rectangle of unknown pixels; right unmarks"),
}
MASK_PRESETS = (
    ("bottom", "&Bottom half"),
    ("right", "&Right half"),
    ("centre", "&Centre square"),
    ("random", "Random &pixels (half)"),
)
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.PNG *.JPG *.JPEG);;All files (*)"
MODEL_FILTER = "Models (*.onnx *.pt);;ONNX models (*.onnx);;Torch checkpoints (*.pt)"
MAX_BRUSH = 8


def model_label_text(loaded: LoadedModel) -> str:
    """The status bar's model entry: file, kind, provider and test NLL where known."""
    text = f"model {loaded.path.name} · {loaded.kind} · {loaded.provider}"
    if loaded.test_nats is not None:
        text += f" · {loaded.test_nats:.2f} nats/digit"
    return text


def model_tooltip(loaded: LoadedModel) -> str:
    if loaded.test_nats is None:
        return f"{loaded.path}\nNo test figures are saved with this model."
    digits = loaded.test_figures.get("digits")
    on = f"{digits:,} " if isinstance(digits, int) else ""
    return (
        f"{loaded.path}\nNegative log-likelihood on {on}fixed-seed binarized MNIST test "
        f"digits: {loaded.test_nats:.2f} nats per digit, lower is better "
        "(PixelCNN, van den Oord et al. 2016: 81.30)."
    )


class MainWindow(QtWidgets.QMainWindow):
    """The studio. `model_path` is opened on start; a failure is shown, not raised.

    extra_views=False leaves out the tabs of gui.views (tests of this window
    that do not need them run faster without).
    """

    def __init__(
        self, settings, model_path=None, device: str = "auto", extra_views=True, parent=None
    ):
        super().__init__(parent)
        self.settings = settings
        self.device = device
        self.extra_views = extra_views
        self.model: LoadedModel | None = None
        self.drawing = Drawing()
        self._digit_set = None
        self.rng = np.random.default_rng()
        self._extra_tabs: list[QtWidgets.QWidget] = []
        self._error_box: QtWidgets.QMessageBox | None = None
        self._tab_restored = False

        # create
        self.canvas = DigitCanvas(self.drawing)
        self.panel = CompletionPanel(settings)
        self.tabs = QtWidgets.QTabWidget()
        self.splitter = QtWidgets.QSplitter(Qt.Horizontal)
        self.model_label = QtWidgets.QLabel("no model")
        self.rate_label = QtWidgets.QLabel("")
        self.pixel_label = QtWidgets.QLabel("")
        self.brush_box = QtWidgets.QSpinBox()
        self.brush_box.setRange(1, MAX_BRUSH)
        self.brush_box.setSuffix(" px")
        self.brush_box.setToolTip("Brush size ([ and ] change it)")
        self.brush_box.setFocusPolicy(Qt.ClickFocus)
        self._create_actions()

        # layout
        canvas_box = QtWidgets.QWidget()
        canvas_layout = QtWidgets.QVBoxLayout(canvas_box)
        canvas_layout.setContentsMargins(4, 4, 4, 4)
        canvas_layout.addWidget(self.canvas, 1)
        self.splitter.addWidget(canvas_box)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self.tabs.addTab(self.splitter, "Draw and complete")
        self.setCentralWidget(self.tabs)
        self._create_menus()
        self._create_toolbar()
        for widget in (self.pixel_label, self.rate_label, self.model_label):
            self.statusBar().addPermanentWidget(widget)
        self.setWindowTitle("PixelCNN studio")
        self._default_size()

        # connect
        self.canvas.sigChanged.connect(self._on_drawing_changed)
        self.canvas.sigHovered.connect(self._on_canvas_hovered)
        self.brush_box.valueChanged.connect(self._on_brush_changed)
        self.panel.sigCompleteRequested.connect(self._on_complete_requested)
        self.panel.sigUseImage.connect(self._on_use_image)
        self.panel.sigStatus.connect(self._on_panel_status)
        self.panel.sigRate.connect(self._on_rate)
        self.panel.sigError.connect(self.show_error)
        self.panel.sigRunningChanged.connect(self._on_running_changed)

        # initial update
        self._restore_settings()
        self._on_drawing_changed()
        if model_path is None or not self.open_model(model_path):
            # without a model the views explain a fresh network, and say so
            self._rebuild_extra_tabs()

    # building

    def _action(self, text, slot=None, shortcut=None, tip=None, checkable=False):
        action = QtGui.QAction(text, self)
        if shortcut:
            shortcuts = shortcut if isinstance(shortcut, (list, tuple)) else [shortcut]
            action.setShortcuts([QtGui.QKeySequence(s) for s in shortcuts])
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        action.setCheckable(checkable)
        if slot is not None:
            action.triggered.connect(slot)
        return action

    def _create_actions(self) -> None:
        a = self._action
        self.open_image_action = a(
            "&Open image…", self._on_open_image, "Ctrl+O", "Load a PNG or JPEG as a 28x28 digit"
        )
        self.random_digit_action = a(
            "Random &MNIST digit",
            self._on_random_digit,
            "Ctrl+D",
            "Load one of the MNIST test digits shipped with the studio",
        )
        self.save_drawing_action = a(
            "&Save drawing…", self._on_save_drawing, "Ctrl+S", "Save the digit as a 28x28 PNG"
        )
        self.save_grid_action = a(
            "Save completions as &PNG…",
            self._on_save_grid,
            "Ctrl+Shift+S",
            "Save the finished completions as one PNG grid",
        )
        self.save_gif_action = a(
            "Save sampling as &GIF…",
            self._on_save_gif,
            "Ctrl+Shift+G",
            "Save the last sampling run as an animated GIF",
        )
        self.open_model_action = a(
            "Open &model…", self._on_open_model, "Ctrl+M", "Open an ONNX model or a checkpoint"
        )
        self.quit_action = a("&Quit", self.close, QtGui.QKeySequence.Quit)

        self.undo_action = a("&Undo", self._on_undo, "Ctrl+Z")
        self.redo_action = a("&Redo", self._on_redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        self.clear_action = a("C&lear", self._on_clear, "Delete", "Clear the ink and the mask")
        self.invert_action = a("&Invert", self._on_invert, "Ctrl+I", "Swap ink and paper")
        self.clear_mask_action = a(
            "Clear &mask", self._on_clear_mask, "Shift+Delete", "Make every pixel known"
        )

        self.tool_group = QtGui.QActionGroup(self)
        self.tool_actions = {}
        for tool in TOOLS:
            text, key, tip = TOOL_LABELS[tool]
            action = a(text, None, key, f"{tip} ({key})", checkable=True)
            action.setData(tool)
            self.tool_group.addAction(action)
            self.tool_actions[tool] = action
        self.tool_group.triggered.connect(self._on_tool_triggered)
        self.smaller_brush_action = a(
            "Smaller brush", lambda: self.brush_box.stepBy(-1), "[", "Brush size down"
        )
        self.bigger_brush_action = a(
            "Bigger brush", lambda: self.brush_box.stepBy(1), "]", "Brush size up"
        )
        self.grid_action = a("Pixel &grid", self._on_grid_toggled, "G", checkable=True)

        self.preset_actions = []
        for name, text in MASK_PRESETS:
            action = a(text, None, None, "Replace the mask with this preset")
            action.setData(name)
            action.triggered.connect(self._on_preset_triggered)
            self.preset_actions.append(action)

    def _create_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.open_image_action, self.random_digit_action])
        file_menu.addSeparator()
        file_menu.addActions(
            [self.save_drawing_action, self.save_grid_action, self.save_gif_action]
        )
        file_menu.addSeparator()
        file_menu.addAction(self.open_model_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        edit_menu = bar.addMenu("&Edit")
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.clear_action, self.invert_action, self.clear_mask_action])

        tools_menu = bar.addMenu("&Tools")
        tools_menu.addActions(list(self.tool_actions.values()))
        tools_menu.addSeparator()
        tools_menu.addActions([self.smaller_brush_action, self.bigger_brush_action])

        self.mask_menu = bar.addMenu("M&ask")
        self.mask_menu.addActions(self.preset_actions)
        self.mask_menu.addSeparator()
        self.mask_menu.addAction(self.clear_mask_action)

        sample_menu = bar.addMenu("&Sample")
        p = self.panel
        sample_menu.addActions([p.complete_action, p.pause_action, p.step_action, p.stop_action])

        view_menu = bar.addMenu("&View")
        view_menu.addAction(self.grid_action)

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&About", self._on_about))

    def _create_toolbar(self) -> None:
        toolbar = self.addToolBar("Drawing")
        toolbar.setObjectName("drawing_toolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        toolbar.addActions(list(self.tool_actions.values()))
        toolbar.addWidget(QtWidgets.QLabel(" Brush "))
        toolbar.addWidget(self.brush_box)
        toolbar.addSeparator()
        toolbar.addActions([self.undo_action, self.redo_action])
        toolbar.addSeparator()
        toolbar.addActions([self.clear_action, self.invert_action])
        presets = QtWidgets.QToolButton()
        presets.setText("Mask presets")
        presets.setMenu(self.mask_menu)
        presets.setPopupMode(QtWidgets.QToolButton.InstantPopup)
        toolbar.addWidget(presets)
        toolbar.addSeparator()
        toolbar.addAction(self.random_digit_action)
        toolbar.addAction(self.grid_action)

    def _default_size(self) -> None:
        """1400x900, or less on a smaller screen; a saved geometry overrides it."""
        screen = QtGui.QGuiApplication.primaryScreen()
        room = screen.availableGeometry().size() if screen else QtCore.QSize(1400, 900)
        self.resize(min(1400, int(room.width() * 0.9)), min(900, int(room.height() * 0.9)))

    # settings

    def _restore_settings(self) -> None:
        s = self.settings
        tool = s.get("tool") if s.get("tool") in TOOLS else "pen"
        self.tool_actions[tool].setChecked(True)
        self.canvas.set_tool(tool)
        self.brush_box.setValue(s.get("brush_size"))
        self.canvas.set_brush_size(self.brush_box.value())
        self.grid_action.setChecked(s.get("grid"))
        self.canvas.set_grid_visible(s.get("grid"))
        # first run: a little more room for the completions than for the canvas
        self.splitter.setSizes([560, 700])
        for key, restore in (
            ("geometry", self.restoreGeometry),
            ("window_state", self.restoreState),
            ("splitter", self.splitter.restoreState),
        ):
            value = s.get_bytes(key)
            if value is not None:
                restore(value)

    def save_settings(self) -> None:
        s = self.settings
        s.set("tool", self.canvas.tool)
        s.set("brush_size", self.brush_box.value())
        s.set("grid", self.grid_action.isChecked())
        s.set("tab", self.tabs.currentIndex())
        s.set_bytes("geometry", self.saveGeometry())
        s.set_bytes("window_state", self.saveState())
        s.set_bytes("splitter", self.splitter.saveState())
        self.panel.save_settings()
        s.sync()

    # model

    def open_model(self, path) -> bool:
        """Opens a model file; on failure shows why and keeps the current one."""
        QtWidgets.QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            loaded = load_model_file(path, self.device)
        except PixelCNNError as error:
            self.show_error(str(error), offer_model=True)
            return False
        except Exception as error:  # an unexpected failure must not close the studio
            log.exception("opening %s failed", path)
            self.show_error(
                f"{path} could not be opened ({type(error).__name__}: {error}). "
                "Open another model with File > Open model.",
                offer_model=True,
            )
            return False
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()

        self.model = loaded
        self.panel.set_fast_available(loaded.fast_sampler)
        self.model_label.setText(model_label_text(loaded))
        self.model_label.setToolTip(model_tooltip(loaded))
        self.setWindowTitle(f"PixelCNN studio — {loaded.path.name}")
        self.statusBar().showMessage(f"Opened {loaded.describe()}.", 5000)
        self._rebuild_extra_tabs()
        return True

    def _rebuild_extra_tabs(self) -> None:
        """Adds the explanatory views of gui.views for the open model, if that module exists."""
        self._close_extra_tabs()
        if not self.extra_views:
            return
        try:
            from gui.views import make_views
        except ImportError as error:
            if getattr(error, "name", None) == "gui.views":
                log.info("gui.views is not there; the studio runs without its extra tabs")
            else:
                log.exception("the explanatory views could not be imported")
            return
        try:
            if self.model is None:
                views = make_views(None, None)
            else:
                views = make_views(self.model.checkpoint_path, self.model.metrics_path)
        except PixelCNNError as error:
            self.statusBar().showMessage(f"The explanatory views are not available: {error}")
            return
        except Exception:
            log.exception("the explanatory views could not be built")
            return
        for title, widget in views:
            # a tab title's "&" would mark a shortcut letter; show it as written
            self.tabs.addTab(widget, title.replace("&", "&&"))
            self._extra_tabs.append(widget)
        # the last tab of the previous session, once; later model changes keep the current one
        if not self._tab_restored:
            self.tabs.setCurrentIndex(min(self.settings.get("tab"), self.tabs.count() - 1))
            self._tab_restored = True

    def _close_extra_tabs(self) -> None:
        for widget in self._extra_tabs:
            # the views run threads of their own; each stops and waits in shutdown()
            shutdown = getattr(widget, "shutdown", None)
            if shutdown is not None:
                shutdown()
            self.tabs.removeTab(self.tabs.indexOf(widget))
            widget.deleteLater()
        self._extra_tabs = []

    # messages

    def show_error(self, message: str, offer_model: bool = False) -> None:
        """A message for the user, in a box that does not block the event loop."""
        log.warning("%s", message)
        self.statusBar().showMessage(message, 10000)
        if self._error_box is not None:
            self._error_box.close()
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Warning)
        box.setWindowTitle("PixelCNN studio")
        box.setText(message)
        box.setStandardButtons(QtWidgets.QMessageBox.Close)
        if offer_model:
            button = box.addButton("Open model…", QtWidgets.QMessageBox.AcceptRole)
            button.clicked.connect(self._on_open_model)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.finished.connect(self._on_error_box_finished)
        self._error_box = box
        box.open()

    def _on_error_box_finished(self) -> None:
        self._error_box = None

    # slots: files

    def _on_open_image(self) -> None:
        from engine.images import load_digit
        from gui.image_dialog import ImagePreviewDialog

        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open image", self.settings.get("last_dir"), IMAGE_FILTER
        )
        if not path:
            return
        self.settings.set("last_dir", str(Path(path).parent))
        try:
            digit = load_digit(path)
        except PixelCNNError as error:
            self.show_error(str(error))
            return
        dialog = ImagePreviewDialog(path, digit, self)
        if dialog.exec() == QtWidgets.QDialog.Accepted:
            self.load_digit_image(digit, f"Opened {Path(path).name}.")

    def load_digit_image(self, digit: np.ndarray, message: str = "") -> None:
        """Puts a 28x28 binary digit in the canvas, keeping the mask; one undo step."""
        self.drawing.set_image(digit, keep_mask=True)
        self.canvas.refresh()
        self._on_drawing_changed()
        if message:
            self.statusBar().showMessage(message, 5000)

    def _on_random_digit(self) -> None:
        from gui.digit_set import load_digit_set

        try:
            if self._digit_set is None:
                self._digit_set = load_digit_set()
        except PixelCNNError as error:
            self.show_error(str(error))
            return
        k = int(self.rng.integers(len(self._digit_set)))
        self.load_digit_image(self._digit_set.binary(k), self._digit_set.describe(k) + ".")

    def _ask_save_path(self, title: str, name: str, kind: str) -> str | None:
        start = str(Path(self.settings.get("last_dir") or Path.home()) / name)
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, title, start, kind)
        if path:
            self.settings.set("last_dir", str(Path(path).parent))
        return path or None

    def _on_save_drawing(self) -> None:
        from engine.images import save_png

        path = self._ask_save_path("Save drawing", "digit.png", "PNG image (*.png)")
        if path:
            self._save(lambda: save_png(self.drawing.image, path), path)

    def _on_save_grid(self) -> None:
        path = self._ask_save_path("Save completions", "completions.png", "PNG image (*.png)")
        if path:
            self._save(lambda: self.panel.save_grid(path), path)

    def _on_save_gif(self) -> None:
        path = self._ask_save_path("Save sampling", "sampling.gif", "GIF animation (*.gif)")
        if path:
            self._save(lambda: self.panel.save_gif(path), path)

    def _save(self, write, path) -> None:
        try:
            write()
        except PixelCNNError as error:
            self.show_error(str(error))
            return
        self.statusBar().showMessage(f"Saved {path}.", 5000)

    def _on_open_model(self) -> None:
        start = str(self.model.path.parent) if self.model else self.settings.get("last_dir")
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open model", start, MODEL_FILTER)
        if path:
            self.open_model(path)

    def _on_about(self) -> None:
        QtWidgets.QMessageBox.about(
            self,
            "About PixelCNN studio",
            "<p><b>PixelCNN studio</b>: draw or mask a digit and watch a PixelCNN "
            "complete it pixel by pixel.</p>"
            "<p>The shipped digits come from the MNIST test set by Yann LeCun, Corinna "
            "Cortes and Christopher J.C. Burges (CC BY-SA 3.0).</p>",
        )

    # slots: editing

    def _on_tool_triggered(self, action: QtGui.QAction) -> None:
        self.canvas.set_tool(action.data())

    def _on_brush_changed(self, size: int) -> None:
        self.canvas.set_brush_size(size)

    def _on_grid_toggled(self, visible: bool) -> None:
        self.canvas.set_grid_visible(visible)

    def _on_undo(self) -> None:
        if self.drawing.undo():
            self._after_history_change()

    def _on_redo(self) -> None:
        if self.drawing.redo():
            self._after_history_change()

    def _on_clear(self) -> None:
        self.drawing.clear()
        self._after_history_change()

    def _on_invert(self) -> None:
        self.drawing.invert()
        self._after_history_change()

    def _on_clear_mask(self) -> None:
        self.drawing.clear_mask()
        self._after_history_change()

    def _on_preset_triggered(self) -> None:
        from engine.masks import named_mask

        name = self.sender().data()
        seed = int(self.rng.integers(2**31 - 1))
        self.drawing.set_mask(named_mask(name, self.drawing.image.shape, seed=seed))
        self._after_history_change()

    def _after_history_change(self) -> None:
        self.canvas.refresh()
        self._on_drawing_changed()

    def _on_drawing_changed(self) -> None:
        self.undo_action.setEnabled(self.drawing.can_undo())
        self.redo_action.setEnabled(self.drawing.can_redo())
        unknown = int(self.drawing.unknown.sum())
        self.panel.complete_action.setToolTip(
            f"Fill the {unknown} masked pixels (Ctrl+Enter)"
            if unknown
            else "Mask some pixels first, then fill them (Ctrl+Enter)"
        )

    def _on_canvas_hovered(self, i: int, j: int) -> None:
        if i < 0:
            self.pixel_label.setText("")
            return
        state = "unknown" if self.drawing.unknown[i, j] else "known"
        ink = "ink" if self.drawing.image[i, j] else "paper"
        self.pixel_label.setText(f"({i}, {j}) {ink}, {state}")

    def _on_use_image(self, image: np.ndarray) -> None:
        self.drawing.set_image(image, keep_mask=False)
        self._after_history_change()

    # slots: sampling

    def _on_complete_requested(self) -> None:
        try:
            backend = self.model.backend if self.model else None
            cached = self.model.cached if self.model else None
            self.panel.start(backend, self.drawing.image, self.drawing.unknown, cached)
        except PixelCNNError as error:
            self.show_error(str(error), offer_model=self.model is None)

    def _on_panel_status(self, message: str) -> None:
        self.statusBar().showMessage(message)

    def _on_rate(self, pixels_per_second: float) -> None:
        self.rate_label.setText(f"{pixels_per_second:,.0f} pixels/s")

    def _on_running_changed(self, running: bool) -> None:
        self.open_model_action.setEnabled(not running)

    # lifetime

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        # stop sampling and wait for its thread, so none outlives the window
        if not self.panel.shutdown():
            log.warning("closing while the sampling thread still runs")
        self.save_settings()
        self._close_extra_tabs()
        super().closeEvent(event)
