"""The completion side of the studio: sampling controls and a grid of live completions.

Each tile shows one completion as its pixels appear, the pixel being drawn
marked, and a heat map of the probability of ink each pixel was drawn with;
when the run ends it shows the completion's log-likelihood, and a click on it
sends it back to the canvas.
"""

import logging
import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtGui, QtWidgets
from PySide6.QtCore import Qt, Signal

from engine.errors import PixelCNNError
from gui.canvas import digit_view, make_image_item
from gui.worker import CompletionRequest, CompletionRunner, RunResult, StepReport

log = logging.getLogger(__name__)

SIDE = 28
SAMPLE_COUNTS = (1, 4, 9, 16)
MODES = (
    ("raster", "Raster order"),
    ("smc", "Likelihood-aware (SMC)"),
    ("importance", "Likelihood-aware (importance)"),
)
SAMPLERS = (("fast", "Fast (cached)"), ("naive", "Naive (full pass per pixel)"))
VIEWS = (("side", "Digits and heat maps"), ("digits", "Digits"), ("heat", "Heat maps"))
# speed slider positions: seconds to wait before each pixel, 0 = as fast as it goes
SPEED_DELAYS = (1.0, 0.5, 0.2, 0.1, 0.04, 0.02, 0.01, 0.0)
HEAT_OFFSET = SIDE + 2  # where the heat map starts, beside or below the digit

# A tile is one uint8 image of codes shown through one 256-entry lookup table:
# the digit half uses codes 0-4, the heat map half 5-6 for pixels that were not
# drawn and 8-255 for p(ink) of drawn ones; 7 is the transparent gap between them
KNOWN_PAPER, KNOWN_INK, DRAWN_PAPER, DRAWN_INK, PENDING = range(5)
HEAT_PAPER, HEAT_KNOWN_INK, GAP = 5, 6, 7
HEAT_FIRST, HEAT_LEVELS = 8, 248
DIGIT_COLOURS = [
    (255, 255, 255, 255),  # known paper
    (20, 20, 24, 255),  # known ink
    (232, 240, 255, 255),  # drawn paper, faint blue
    (25, 90, 215, 255),  # drawn ink, blue
    (255, 205, 160, 255),  # not drawn yet: the mask colour
]
# under the heat map the known digit shows faintly, so the map has a place
HEAT_BASE_COLOURS = [(255, 255, 255, 255), (200, 200, 205, 255), (0, 0, 0, 0)]
MARKER_COLOUR = (230, 20, 60)


def heat_colours(levels: int = 256) -> np.ndarray:
    """Light where ink was unlikely, dark red where it was likely, like ink on paper."""
    colours = [(255, 252, 225), (253, 190, 90), (230, 80, 30), (120, 0, 40)]
    colour_map = pg.ColorMap(pos=[0.0, 0.35, 0.7, 1.0], color=colours)
    return colour_map.getLookupTable(nPts=levels, alpha=True)


def tile_lut() -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    lut[:HEAT_PAPER] = DIGIT_COLOURS
    lut[HEAT_PAPER:HEAT_FIRST] = HEAT_BASE_COLOURS
    lut[HEAT_FIRST:] = heat_colours(HEAT_LEVELS)
    return lut


def tile_codes(canvas: np.ndarray, unknown: np.ndarray, prob_map: np.ndarray) -> np.ndarray:
    """uint8 codes of one completion's pixels: known, drawn or pending, paper or ink."""
    drawn = unknown & ~np.isnan(prob_map)
    codes = canvas.astype(np.uint8).copy()
    codes[drawn] += DRAWN_PAPER
    codes[unknown & ~drawn] = PENDING
    return codes


def heat_codes(codes: np.ndarray, prob_map: np.ndarray) -> np.ndarray:
    """Codes of the heat map half: p(ink) where drawn, the faint known digit elsewhere."""
    drawn = ~np.isnan(prob_map)
    heat = np.where(codes == KNOWN_INK, HEAT_KNOWN_INK, HEAT_PAPER).astype(np.uint8)
    levels = np.rint(np.clip(prob_map[drawn], 0.0, 1.0) * (HEAT_LEVELS - 1))
    heat[drawn] = HEAT_FIRST + levels.astype(np.uint8)
    return heat


def speed_text(position: int) -> str:
    delay = SPEED_DELAYS[position]
    return "as fast as it goes" if delay == 0 else f"{1 / delay:g} steps/s"


class TileView(pg.GraphicsView):
    """One completion: the digit, its heat map beside it, and the current pixel marked.

    Both halves are one image of codes, so a live update renders one image
    per tile however the halves are arranged.
    """

    sigClicked = Signal()

    def __init__(self, parent=None):
        # pyqtgraph calls resizeEvent from inside __init__, so these come first
        self.codes = np.full((SIDE, SIDE), PENDING, np.uint8)
        self.prob_map = np.full((SIDE, SIDE), np.nan, np.float32)
        self._position = None
        self._mode, self._heat_offset = "side", (HEAT_OFFSET, 0)
        self.view = None
        super().__init__(parent)

        # create
        self.view = digit_view(SIDE)
        self.image_item = make_image_item(tile_lut())
        self.markers = [QtWidgets.QGraphicsRectItem(0, 0, 1, 1) for _ in range(2)]

        # layout
        self.setCentralItem(self.view)
        self.view.addItem(self.image_item)
        for marker in self.markers:
            marker.setPen(pg.mkPen(MARKER_COLOUR, width=2, cosmetic=True))
            marker.setZValue(10)
            marker.hide()
            self.view.addItem(marker)
        self.setBackground(None)
        self.setMinimumSize(60, 60)
        self.setCursor(Qt.PointingHandCursor)

        # initial update
        self.set_view_mode("side")

    def set_view_mode(self, mode: str) -> None:
        """'side': digit and heat map together; 'digits' or 'heat': one of them."""
        self._mode = mode
        self._arrange(force=True)

    def _arrange(self, force: bool = False) -> None:
        """Puts the heat map beside the digit or below it, whichever shows them larger."""
        width, height = max(self.width(), 1), max(self.height(), 1)
        if self._mode != "side":
            offset = (0, 0)
        elif min(width / (HEAT_OFFSET + SIDE), height / SIDE) >= min(
            width / SIDE, height / (HEAT_OFFSET + SIDE)
        ):
            offset = (HEAT_OFFSET, 0)
        else:
            offset = (0, HEAT_OFFSET)
        if offset == self._heat_offset and not force:
            return
        self._heat_offset = offset
        self.view.setRange(
            xRange=(0, SIDE + offset[0]), yRange=(0, SIDE + offset[1]), padding=0.02
        )
        self._render()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.view is not None:
            self._arrange()

    def show_state(self, codes: np.ndarray, prob_map: np.ndarray, position=None) -> None:
        """Shows a completion's pixel codes and ink probabilities; marks `position` (i, j)."""
        self.codes, self.prob_map, self._position = codes, prob_map, position
        self._render()

    def _render(self) -> None:
        dx, dy = self._heat_offset
        if self._mode == "digits":
            image = self.codes
        elif self._mode == "heat":
            image = heat_codes(self.codes, self.prob_map)
        else:
            image = np.full((SIDE + dy, SIDE + dx), GAP, np.uint8)
            image[:SIDE, :SIDE] = self.codes
            image[dy:, dx:] = heat_codes(self.codes, self.prob_map)
        self.image_item.setImage(image, autoLevels=False)

        shown = (self._mode != "heat", self._mode != "digits")
        for marker, (x0, y0), visible in zip(self.markers, ((0, 0), (dx, dy)), shown, strict=True):
            marker.setVisible(visible and self._position is not None)
            if self._position is not None:
                i, j = self._position
                marker.setRect(x0 + j, y0 + i, 1, 1)

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() == Qt.LeftButton and self.rect().contains(event.position().toPoint()):
            self.sigClicked.emit()
        event.accept()

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        event.accept()

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:
        event.accept()


class CompletionTile(QtWidgets.QFrame):
    """A TileView with its caption (log-likelihood once finished)."""

    sigClicked = Signal(int)

    def __init__(self, index: int, parent=None):
        super().__init__(parent)
        self.index = index

        # create
        self.view = TileView()
        self.caption = QtWidgets.QLabel(" ")
        self.caption.setAlignment(Qt.AlignCenter)
        self.caption.setTextInteractionFlags(Qt.NoTextInteraction)

        # layout
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(3, 3, 3, 3)
        layout.setSpacing(2)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.caption)
        self.setFrameShape(QtWidgets.QFrame.StyledPanel)

        # connect
        self.view.sigClicked.connect(self._on_view_clicked)

    def set_caption(self, text: str, tooltip: str = "") -> None:
        self.caption.setText(text)
        self.setToolTip(tooltip)

    def _on_view_clicked(self) -> None:
        self.sigClicked.emit(self.index)


class CompletionGrid(QtWidgets.QWidget):
    """1, 4, 9 or 16 tiles, in as many columns as shows them largest in the space there is."""

    sigTileClicked = Signal(int)

    SPACING = 6
    CAPTION = 24  # pixels of a tile that are not its picture: caption and margins

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tiles: list[CompletionTile] = []
        self._mode = "side"
        self._columns = 0
        self._layout = QtWidgets.QGridLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(self.SPACING)

    def set_count(self, count: int) -> None:
        if count == len(self.tiles):
            return
        for tile in self.tiles:
            self._layout.removeWidget(tile)
            tile.deleteLater()
        self.tiles = []
        for index in range(count):
            tile = CompletionTile(index)
            tile.view.set_view_mode(self._mode)
            tile.sigClicked.connect(self.sigTileClicked)
            self.tiles.append(tile)
        self._columns = 0
        self._arrange()

    def set_view_mode(self, mode: str) -> None:
        self._mode = mode
        for tile in self.tiles:
            tile.view.set_view_mode(mode)
        self._arrange()

    def best_columns(self, width: int, height: int) -> int:
        """The column count whose tiles show a pixel largest, in a width x height area."""
        count = len(self.tiles)
        shapes = [(SIDE, SIDE)]
        if self._mode == "side":
            shapes = [(HEAT_OFFSET + SIDE, SIDE), (SIDE, HEAT_OFFSET + SIDE)]

        def pixel_size(columns: int) -> float:
            rows = -(-count // columns)
            tile_w = (width - self.SPACING * (columns - 1)) / columns
            tile_h = (height - self.SPACING * (rows - 1)) / rows - self.CAPTION
            return max(min(tile_w / w, tile_h / h) for w, h in shapes)

        # full rows look tidier: a ragged last row must earn its place by 10%
        scores = {
            columns: pixel_size(columns) * (1.0 if count % columns == 0 else 0.9)
            for columns in range(1, count + 1)
        }
        # among layouts within 5% of the best, the squarest grid
        good = [c for c, score in scores.items() if score >= 0.95 * max(scores.values())]
        return min(good, key=lambda columns: abs(columns - math.sqrt(count)))

    def _arrange(self) -> None:
        if not self.tiles:
            return
        columns = self.best_columns(max(self.width(), 1), max(self.height(), 1))
        if columns == self._columns:
            return
        self._columns = columns
        for tile in self.tiles:
            self._layout.removeWidget(tile)
        for index, tile in enumerate(self.tiles):
            self._layout.addWidget(tile, *divmod(index, columns))
        for k in range(self._layout.columnCount()):
            self._layout.setColumnStretch(k, 1 if k < columns else 0)
        for k in range(self._layout.rowCount()):
            self._layout.setRowStretch(k, 1 if k < -(-len(self.tiles) // columns) else 0)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._arrange()


class CompletionPanel(QtWidgets.QWidget):
    """Controls, a progress bar and the tile grid; owns the sampling runner.

    The window gives it a backend and the drawing through `start`; it sends a
    clicked completion back with sigUseImage and says how it goes through
    sigStatus (status bar) and sigError (a message for the user).
    """

    sigCompleteRequested = Signal()
    sigUseImage = Signal(object)  # uint8 [28,28]
    sigStatus = Signal(str)
    sigRate = Signal(float)  # pixels per second of the run going on or just finished
    sigError = Signal(str)
    sigRunningChanged = Signal(bool)

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.runner = CompletionRunner(self)
        self.result: RunResult | None = None
        self._unknown = np.zeros((SIDE, SIDE), bool)
        self.sampler_text = ""

        # create
        self.samples_box = QtWidgets.QComboBox()
        for count in SAMPLE_COUNTS:
            self.samples_box.addItem(f"{count}", count)
        self.mode_box = QtWidgets.QComboBox()
        for key, text in MODES:
            self.mode_box.addItem(text, key)
        self.mode_box.setToolTip(
            "Raster order fills the hole from the pixels before it only.\n"
            "The likelihood-aware modes draw several candidates per completion and keep\n"
            "those that best explain the known pixels after the hole."
        )
        self.candidates_box = QtWidgets.QSpinBox()
        self.candidates_box.setRange(2, 32)
        self.candidates_box.setToolTip("Candidates drawn per completion in the likelihood modes")
        self.sampler_box = QtWidgets.QComboBox()
        for key, text in SAMPLERS:
            self.sampler_box.addItem(text, key)
        self.sampler_box.setToolTip(
            "Fast reuses cached activations so each pixel costs only what it changes;\n"
            "naive runs the whole network once per pixel, as the reference code does."
        )
        self.temperature_box = QtWidgets.QDoubleSpinBox()
        self.temperature_box.setRange(0.05, 3.0)
        self.temperature_box.setSingleStep(0.05)
        self.temperature_box.setDecimals(2)
        self.temperature_box.setToolTip("Below 1: bolder, more typical strokes; above 1: wilder")
        self.seed_box = QtWidgets.QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.new_seed_box = QtWidgets.QCheckBox("new each run")
        self.new_seed_box.setToolTip("Pick a fresh seed for every run; untick to repeat a run")
        self.speed_slider = QtWidgets.QSlider(Qt.Horizontal)
        self.speed_slider.setRange(0, len(SPEED_DELAYS) - 1)
        self.speed_slider.setPageStep(1)
        self.speed_slider.setTickPosition(QtWidgets.QSlider.TicksBelow)
        self.speed_slider.setToolTip(
            "How fast the pixels appear: each step draws one pixel in every completion"
        )
        self.speed_label = QtWidgets.QLabel()
        self.speed_label.setMinimumWidth(120)
        self.view_box = QtWidgets.QComboBox()
        for key, text in VIEWS:
            self.view_box.addItem(text, key)

        self.complete_action = QtGui.QAction("&Complete", self)
        self.complete_action.setShortcuts(
            [QtGui.QKeySequence("Ctrl+Return"), QtGui.QKeySequence("Ctrl+Enter")]
        )
        self.complete_action.setToolTip("Fill the masked pixels (Ctrl+Enter)")
        self.pause_action = QtGui.QAction("&Pause", self)
        self.pause_action.setCheckable(True)
        self.pause_action.setShortcut(QtGui.QKeySequence(Qt.Key_Space))
        self.pause_action.setToolTip("Pause or resume the sampling (Space)")
        self.step_action = QtGui.QAction("Ste&p one pixel", self)
        self.step_action.setShortcut(QtGui.QKeySequence(Qt.Key_N))
        self.step_action.setToolTip("Draw one more pixel, then pause (N)")
        self.stop_action = QtGui.QAction("&Stop", self)
        self.stop_action.setShortcut(QtGui.QKeySequence(Qt.Key_Escape))
        self.stop_action.setToolTip("Stop the sampling (Esc)")
        self.buttons = []
        for action in (
            self.complete_action,
            self.pause_action,
            self.step_action,
            self.stop_action,
        ):
            button = QtWidgets.QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonTextOnly)
            button.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Fixed)
            self.buttons.append(button)
        self.buttons[0].setStyleSheet("QToolButton { font-weight: bold; }")

        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.grid = CompletionGrid()
        self.hint = QtWidgets.QLabel(
            "Mask part of the digit with the mask brush, the rectangle or a preset, "
            "then press Complete (Ctrl+Enter)."
        )
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignCenter)
        self.hint.setStyleSheet("color: palette(mid); font-size: 14px;")
        self.legend = HeatLegend()

        # long item texts must not widen the panel; the popups still show them whole
        for box in (self.samples_box, self.mode_box, self.sampler_box):
            box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(6)

        # layout
        form = QtWidgets.QGridLayout()
        form.setHorizontalSpacing(8)
        rows = (
            ("Samples", self.samples_box, "Mode", self.mode_box),
            ("Candidates", self.candidates_box, "Sampler", self.sampler_box),
            ("Temperature", self.temperature_box, "Seed", self.seed_row()),
        )
        for r, (label_a, widget_a, label_b, widget_b) in enumerate(rows):
            form.addWidget(QtWidgets.QLabel(label_a), r, 0)
            form.addWidget(widget_a, r, 1)
            form.addWidget(QtWidgets.QLabel(label_b), r, 2)
            form.addWidget(widget_b, r, 3)
        speed_row = QtWidgets.QHBoxLayout()
        speed_row.addWidget(self.speed_slider, 1)
        speed_row.addWidget(self.speed_label)
        form.addWidget(QtWidgets.QLabel("Speed"), 3, 0)
        form.addLayout(speed_row, 3, 1, 1, 3)
        form.setColumnStretch(1, 1)
        form.setColumnStretch(3, 2)
        buttons = QtWidgets.QHBoxLayout()
        for button in self.buttons:
            buttons.addWidget(button)
        bottom = QtWidgets.QHBoxLayout()
        bottom.addWidget(QtWidgets.QLabel("Show"))
        bottom.addWidget(self.view_box)
        bottom.addStretch(1)
        bottom.addWidget(self.legend)

        self.stack = QtWidgets.QStackedWidget()
        self.stack.addWidget(self.hint)
        self.stack.addWidget(self.grid)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.stack, 1)
        layout.addLayout(bottom)

        # connect
        self.complete_action.triggered.connect(self.sigCompleteRequested)
        self.pause_action.toggled.connect(self._on_pause_toggled)
        self.step_action.triggered.connect(self._on_step_triggered)
        self.stop_action.triggered.connect(self._on_stop_triggered)
        self.mode_box.currentIndexChanged.connect(self._on_mode_changed)
        self.speed_slider.valueChanged.connect(self._on_speed_changed)
        self.view_box.currentIndexChanged.connect(self._on_view_changed)
        self.grid.sigTileClicked.connect(self._on_tile_clicked)
        self.runner.sigStep.connect(self._on_step)
        self.runner.sigFinished.connect(self._on_finished)
        self.runner.sigFailed.connect(self._on_failed)
        self.runner.sigRunningChanged.connect(self._on_running_changed)

        # initial update
        self.restore_settings()
        self._on_mode_changed()
        self._on_speed_changed(self.speed_slider.value())
        self._on_view_changed()
        self._on_running_changed(False)

    def seed_row(self) -> QtWidgets.QWidget:
        row = QtWidgets.QWidget()
        layout = QtWidgets.QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.seed_box, 1)
        layout.addWidget(self.new_seed_box)
        return row

    # settings

    def restore_settings(self) -> None:
        s = self.settings
        select_data(self.samples_box, s.get("samples"))
        select_data(self.mode_box, s.get("mode"))
        select_data(self.sampler_box, s.get("sampler"))
        select_data(self.view_box, s.get("view"))
        self.candidates_box.setValue(s.get("candidates"))
        self.temperature_box.setValue(s.get("temperature"))
        self.seed_box.setValue(s.get("seed"))
        self.new_seed_box.setChecked(s.get("new_seed"))
        self.speed_slider.setValue(min(s.get("speed"), len(SPEED_DELAYS) - 1))

    def save_settings(self) -> None:
        s = self.settings
        s.set("samples", self.samples_box.currentData())
        s.set("mode", self.mode_box.currentData())
        s.set("sampler", self.sampler_box.currentData())
        s.set("view", self.view_box.currentData())
        s.set("candidates", self.candidates_box.value())
        s.set("temperature", self.temperature_box.value())
        s.set("seed", self.seed_box.value())
        s.set("new_seed", self.new_seed_box.isChecked())
        s.set("speed", self.speed_slider.value())

    # public

    def set_fast_available(self, available: bool) -> None:
        """Says in the sampler box whether the open model has the cached fast path."""
        text = SAMPLERS[0][1] if available else "Fast (not available)"
        self.sampler_box.setItemText(0, text)
        self.sampler_box.setItemData(
            0,
            None if available else "This model has no cached session; it samples naively.",
            Qt.ToolTipRole,
        )

    def is_running(self) -> bool:
        return self.runner.is_running()

    def build_request(self, image: np.ndarray, unknown: np.ndarray) -> CompletionRequest:
        """The request for the current controls; raises PixelCNNError if it cannot run."""
        unknown = np.asarray(unknown, bool)
        if not unknown.any():
            raise PixelCNNError(
                "Nothing is masked, so there is nothing to complete: paint the pixels to fill "
                "with the mask brush (M), drag a mask rectangle (R) or pick a mask preset."
            )
        if self.new_seed_box.isChecked():
            self.seed_box.setValue(int(np.random.default_rng().integers(0, 2**31 - 1)))
        return CompletionRequest(
            image=np.where(unknown, 0, image).astype(np.uint8),
            known=~unknown,
            samples=int(self.samples_box.currentData()),
            temperature=float(self.temperature_box.value()),
            seed=int(self.seed_box.value()),
            mode=self.mode_box.currentData(),
            candidates=int(self.candidates_box.value()),
            fast=self.sampler_box.currentData() == "fast",
        )

    def start(self, backend, image: np.ndarray, unknown: np.ndarray, cached=None) -> None:
        """Starts completing; raises PixelCNNError when the request is impossible.

        `cached`, a backend with the incremental session, serves the fast
        sampler when `backend` itself has none.
        """
        if backend is None:
            raise PixelCNNError("No model is open: open one with File > Open model (Ctrl+M).")
        if self.runner.is_running():
            raise PixelCNNError("A completion is already running; stop it first (Esc).")
        request = self.build_request(image, unknown)

        self._unknown, self.result = ~request.known, None
        self.grid.set_count(request.samples)
        blank = np.full((SIDE, SIDE), np.nan, np.float32)
        for tile in self.grid.tiles:
            tile.view.show_state(tile_codes(request.image, self._unknown, blank), blank)
            tile.set_caption("drawing…", "")
        self.stack.setCurrentWidget(self.grid)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m pixels")
        if request.fast and cached is not None:
            backend = cached
        self.runner.start(backend, request, paused=self.pause_action.isChecked())
        cached_path = request.fast and hasattr(backend, "incremental")
        self.sampler_text = ("the cached session of " if cached_path else "full passes of ") + (
            backend.name
        )
        log.info(
            "completing %d pixels, %d samples, mode %s, seed %d, with %s",
            int(self._unknown.sum()),
            request.samples,
            request.mode,
            request.seed,
            self.sampler_text,
        )

    def stop(self) -> None:
        self.runner.stop()

    def shutdown(self) -> bool:
        return self.runner.shutdown()

    def save_grid(self, path) -> None:
        from engine.images import save_grid

        if self.result is None or self.result.completion is None:
            raise PixelCNNError("There are no finished completions yet: press Complete first.")
        save_grid(self.result.completion.images, path, scale=4, gap=2)

    def save_gif(self, path) -> None:
        from engine.images import grid_image, save_gif

        if self.result is None or self.result.completion is None:
            raise PixelCNNError("There is no finished sampling to animate: press Complete first.")
        frames = [grid_image(frame, gap=1) for frame in self.result.frames]
        # hold the finished grid a moment before the loop starts again
        frames += [frames[-1]] * 25
        save_gif(frames, path, scale=4, duration_ms=40)

    # slots

    def _on_step(self, report: StepReport) -> None:
        step, shown = report.step, report.shown
        position = step.position if step.drawn else None
        for tile, particle in zip(self.grid.tiles, shown, strict=False):
            codes = tile_codes(step.canvases[particle], self._unknown, step.prob_maps[particle])
            tile.view.show_state(codes, step.prob_maps[particle], position)
        self.progress.setRange(0, step.total)
        self.progress.setValue(step.index + 1)
        i, j = step.position
        self.sigRate.emit(report.pixels_per_second)
        self.sigStatus.emit(
            f"pixel ({i}, {j}), {step.index + 1} of {step.total}; "
            f"{report.pixels_per_second:,.0f} pixels/s with {self.sampler_text}"
        )

    def _on_finished(self, result: RunResult) -> None:
        completion = result.completion
        if completion is None:
            self.sigStatus.emit("Stopped.")
            for tile in self.grid.tiles:
                tile.set_caption("stopped", "")
            return
        self.result = result
        for k, tile in enumerate(self.grid.tiles):
            codes = tile_codes(completion.images[k], self._unknown, completion.prob_maps[k])
            tile.view.show_state(codes, completion.prob_maps[k])
            text, tooltip = completion_caption(completion, k)
            tile.set_caption(text, tooltip)
        self.progress.setRange(0, max(completion.steps, 1))
        self.progress.setValue(max(completion.steps, 1))
        pixels = int(self._unknown.sum()) * len(completion.images)
        rate = pixels / result.seconds if result.seconds > 0 else 0.0
        self.sigRate.emit(rate)
        self.sigStatus.emit(
            f"Completed {len(completion.images)} × {int(self._unknown.sum())} pixels in "
            f"{result.seconds:.1f} s ({rate:,.0f} pixels/s with {self.sampler_text}). "
            "Click a completion to use it."
        )

    def _on_failed(self, message: str) -> None:
        self.sigError.emit(message)

    def _on_running_changed(self, running: bool) -> None:
        self.complete_action.setEnabled(not running)
        self.step_action.setEnabled(running or self.pause_action.isChecked())
        self.stop_action.setEnabled(running)
        self.sigRunningChanged.emit(running)

    def _on_pause_toggled(self, paused: bool) -> None:
        if paused:
            self.runner.pause()
        else:
            self.runner.resume()
        self.pause_action.setText("&Resume" if paused else "&Pause")
        self.step_action.setEnabled(self.runner.is_running() or paused)

    def _on_step_triggered(self) -> None:
        # stepping implies pausing; the run starts paused when none is going
        if not self.pause_action.isChecked():
            self.pause_action.setChecked(True)
        if self.runner.is_running():
            self.runner.step_once()
        else:
            self.sigCompleteRequested.emit()
            self.runner.step_once()

    def _on_stop_triggered(self) -> None:
        self.runner.stop()
        if self.pause_action.isChecked():
            self.pause_action.setChecked(False)

    def _on_mode_changed(self) -> None:
        self.candidates_box.setEnabled(self.mode_box.currentData() != "raster")

    def _on_speed_changed(self, position: int) -> None:
        self.speed_label.setText(speed_text(position))
        self.runner.set_delay(SPEED_DELAYS[position])

    def _on_view_changed(self) -> None:
        mode = self.view_box.currentData()
        self.grid.set_view_mode(mode)
        self.legend.setVisible(mode != "digits")

    def _on_tile_clicked(self, index: int) -> None:
        if self.result is None or self.result.completion is None:
            self.sigStatus.emit("Wait for the completion to finish, then click one to use it.")
            return
        self.sigUseImage.emit(self.result.completion.images[index].copy())
        self.sigStatus.emit(f"Completion {index + 1} is now in the canvas (Ctrl+Z undoes it).")


def completion_caption(completion, k: int) -> tuple[str, str]:
    """Caption and tooltip of completion k: its log-likelihood and, if scored, the rest."""
    log_p = completion.log_likelihood[k]
    text = f"log p = {log_p:.1f} nats"
    tooltip = [
        f"log-likelihood of the whole image: {log_p:.2f} nats",
        f"known pixels after the hole: {completion.observed_log_likelihood[k]:.2f} nats",
    ]
    if completion.mode != "raster":
        tooltip.append(f"effective candidates: {completion.effective_sample_size[k]:.1f}")
    tooltip.append("Click to take this completion into the canvas.")
    return text, "\n".join(tooltip)


def select_data(box: QtWidgets.QComboBox, value) -> None:
    index = box.findData(value)
    if index >= 0:
        box.setCurrentIndex(index)


class HeatLegend(QtWidgets.QWidget):
    """A small colour bar: the probability of ink that the heat maps show."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lut = heat_colours()
        strip = np.ascontiguousarray(np.repeat(lut[None, :, :], 12, axis=0))
        image = QtGui.QImage(strip.data, 256, 12, 256 * 4, QtGui.QImage.Format_RGBA8888)
        self._pixmap = QtGui.QPixmap.fromImage(image.copy()).scaled(120, 12)

        bar = QtWidgets.QLabel()
        bar.setPixmap(self._pixmap)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QtWidgets.QLabel("p(ink)  0"))
        layout.addWidget(bar)
        layout.addWidget(QtWidgets.QLabel("1"))
        self.setToolTip("Heat maps: the probability of ink each pixel was drawn with")
