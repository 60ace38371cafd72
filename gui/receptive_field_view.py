"""Receptive-field explorer: which input pixels an output pixel's prediction depends on.

Each map is |gradient| of the network itself at one pixel with respect to a
reference image, for the loaded network and two designs built at the sizes
the user sets (two-stream, and masked with its blind spot).

    python -m gui.receptive_field_view [--checkpoint assets/pixelcnn.pt]
"""

import sys
import time

import numpy as np
from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.errors import PixelCNNError
from engine.model import MaskedPixelCNN
from engine.receptive_field import (
    OUTPUT,
    GradientProbe,
    count_field,
    design_network,
    raster_previous,
    stage_name,
)
from gui.cell_image import CellImage, lookup_table
from gui.view_context import SIDE, ViewContext, run_standalone
from gui.view_thread import JobThread

DESIGN_CHANNELS = 16
STREAMS = (("output logit", OUTPUT), ("vertical stream v", "v"), ("horizontal stream h", "h"))

# index-image codes of a dependency map
FUTURE, RAMP_FIRST, RAMP_LAST, MISSED, LEAKED = 0, 1, 200, 254, 255
DECADES = 6  # the log shading spans this many powers of ten below the strongest pixel
COLORS = {
    FUTURE: (214, 216, 226),
    MISSED: (250, 190, 150),
    LEAKED: (255, 0, 0),
}
MAP_TABLE = lookup_table(COLORS, ramp="viridis", ramp_range=(RAMP_FIRST, RAMP_LAST))


def dependency_cells(dependency: np.ndarray, i: int, j: int) -> np.ndarray:
    """The index image of a map: log-shaded where it depends, coded elsewhere."""
    previous = raster_previous(dependency.shape, i, j)
    depends = dependency > 0
    cells = np.full(dependency.shape, FUTURE, dtype=np.uint8)
    cells[previous] = MISSED

    seen = depends & previous
    if seen.any():
        logs = np.log10(dependency[seen])
        level = np.clip((logs - (logs.max() - DECADES)) / DECADES, 0, 1)
        cells[seen] = np.round(RAMP_FIRST + level * (RAMP_LAST - RAMP_FIRST)).astype(np.uint8)
    cells[depends & ~previous] = LEAKED
    return cells


def describe_field(dependency: np.ndarray, i: int, j: int) -> tuple[str, bool]:
    """A caption for the map at (i, j), and whether the map breaks causality."""
    count = count_field(dependency, i, j)
    lines = [f"sees <b>{count.seen}</b> of {count.previous} previous pixels"]
    seen_rows = np.nonzero((dependency > 0).any(axis=1))[0]
    if count.missed and len(seen_rows):
        top = int(seen_rows.min())
        previous = raster_previous(dependency.shape, i, j)
        missed = previous & ~(dependency > 0)
        above = int(missed[:top].sum())
        beside = count.missed - above
        lines.append(
            f"misses <b>{count.missed}</b>: {above} above row {top} (out of reach), "
            f"{beside} in rows {top}-{i}"
        )
    elif count.missed:
        lines.append(f"misses all {count.missed}")
    else:
        lines.append("misses none")
    if count.leaked:
        lines.append(
            f"<span style='color:#d00'><b>{count.leaked} pixels at or after it influence it: "
            "not causal!</b></span>"
        )
    else:
        lines.append("nothing at or after it")
    return "<br>".join(lines), count.leaked > 0


class _LazyProbe:
    """Makes the probe (a forward pass) on first use, inside the worker thread."""

    def __init__(self, network, reference):
        self.network, self.reference, self._probe = network, reference, None

    def get(self) -> GradientProbe:
        if self._probe is None:
            self._probe = GradientProbe(self.network, self.reference)
        return self._probe


def _output_map_steps(holder: _LazyProbe, budget_s: float = 0.1):
    """Measures every output pixel's map in raster order, in steps of about budget_s."""
    probe = holder.get()
    H, W = probe.shape
    done = 0
    while done < H * W:
        chunk, started = [], time.monotonic()
        while done < H * W and time.monotonic() - started < budget_s:
            i, j = divmod(done, W)
            chunk.append((i, j, probe.dependency_map(OUTPUT, i, j)))
            done += 1
        yield done, chunk
    return done


class FieldPanel(QWidget):
    """One network's map: a title, the cells, a caption; it keeps its own caches."""

    def __init__(self, key: str, parent=None):
        super().__init__(parent)
        self.key = key
        self.network = None
        self.output_maps = np.zeros((SIDE, SIDE, SIDE, SIDE), np.float32)
        self.output_ready = np.zeros((SIDE, SIDE), bool)
        self.stage_maps: dict[tuple[str, int, int], np.ndarray] = {}
        self.holder: _LazyProbe | None = None
        self.maps_ticket = -1
        self.pixel_ticket = -1
        self.requested: tuple[str, int, int] | None = None  # the map pixel_ticket will bring
        self.wanted: tuple[str, int, int] | None = None
        self.shown: tuple[str, int, int] | None = None
        self.current_map: np.ndarray | None = None

        # create
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # three lines for every title, so the three maps line up
        self.title.setMinimumHeight(3 * self.title.fontMetrics().lineSpacing() + 4)
        self.cells = CellImage(MAP_TABLE)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)

        # layout
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.cells, stretch=1)
        layout.addWidget(self.caption)

        # initial update: an empty grid, so the first click lands before any map is in
        self.cells.set_cells(np.full((SIDE, SIDE), FUTURE, np.uint8))

    def reset(self, network, reference):
        self.network = network
        self.output_ready[:] = False
        self.stage_maps.clear()
        self.holder = _LazyProbe(network, reference)
        self.shown = None

    def cached(self, stage: str, i: int, j: int) -> np.ndarray | None:
        if stage == OUTPUT and self.output_ready[i, j]:
            return self.output_maps[i, j]
        return self.stage_maps.get((stage, i, j))

    def show_map(self, dependency: np.ndarray, stage: str, i: int, j: int, where: str):
        self.current_map = dependency
        self.shown = (stage, i, j)
        self.cells.set_cells(dependency_cells(dependency, i, j))
        self.cells.set_marker("pixel", (i, j, 1, 1), color=(255, 40, 200), width=2.5)
        text, _ = describe_field(dependency, i, j)
        self.caption.setText(f"{where} at ({i}, {j}):<br>{text}")

    def show_message(self, text: str):
        self.caption.setText(text)


class ReceptiveFieldView(QWidget):
    """Three networks side by side; hover or click a pixel, pick a stream and a depth."""

    sigMapShown = Signal(str, str, int, int)  # panel key, stage, row, column

    def __init__(self, context: ViewContext, parent=None):
        super().__init__(parent)
        self._context = context
        self._position = (SIDE // 2, SIDE // 2)
        self._started = False
        self._thread = JobThread(self)
        self._design_timer = QTimer(self, singleShot=True, interval=300)

        # create
        self._stream = QComboBox()
        for label, stream in STREAMS:
            self._stream.addItem(label, stream)
        self._block = QSlider(Qt.Orientation.Horizontal)
        self._block_label = QLabel()
        self._reference = QComboBox()
        for index in context.example_indices():
            self._reference.addItem(context.digit_names[index], index)
        self._reference.addItem("blank (all zeros)", -1)
        self._follow = QCheckBox("follow the mouse")
        self._follow.setChecked(True)
        self._layers = self._spin(0, 12, 5)
        self._v_rows, self._v_columns = self._spin(1, 4, 2), self._spin(1, 7, 3, step=2)
        self._h_rows, self._h_columns = self._spin(1, 4, 2), self._spin(1, 4, 2)
        self._mask_a, self._mask_b = self._spin(1, 9, 7, step=2), self._spin(1, 7, 3, step=2)
        self._panels = {key: FieldPanel(key) for key in ("loaded", "two_stream", "masked")}
        self._progress = QProgressBar()
        self._progress.setRange(0, 3 * SIDE * SIDE)
        self._status = QLabel()
        self._legend = QLabel(self._legend_html())
        self._legend.setTextFormat(Qt.TextFormat.RichText)
        self._legend.setWordWrap(True)

        # layout
        controls = QHBoxLayout()
        for widget in (QLabel("trace"), self._stream, QLabel("after block")):
            controls.addWidget(widget)
        controls.addWidget(self._block, stretch=1)
        controls.addWidget(self._block_label)
        controls.addSpacing(12)
        controls.addWidget(QLabel("reference image"))
        controls.addWidget(self._reference)
        controls.addWidget(self._follow)
        design = QGroupBox("designs to compare (random weights, wiring as set here)")
        grid = QGridLayout(design)
        row = [QLabel("layers"), self._layers, QLabel("v kernel"), self._v_rows, QLabel("x")]
        row += [self._v_columns, QLabel("h kernel"), self._h_rows, QLabel("x"), self._h_columns]
        row += [QLabel("mask A"), self._mask_a, QLabel("mask B"), self._mask_b]
        for column, widget in enumerate(row):
            grid.addWidget(widget, 0, column)
        grid.setColumnStretch(len(row), 1)
        panels = QHBoxLayout()
        for panel in self._panels.values():
            panels.addWidget(panel, stretch=1)
        footer = QHBoxLayout()
        footer.addWidget(self._progress, stretch=1)
        footer.addWidget(self._status, stretch=2)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addWidget(design)
        layout.addLayout(panels, stretch=1)
        layout.addWidget(self._legend)
        layout.addLayout(footer)

        # connect
        self._stream.currentIndexChanged.connect(self._on_trace_changed)
        self._block.valueChanged.connect(self._on_trace_changed)
        self._reference.currentIndexChanged.connect(self._on_reference_changed)
        for spin in (self._layers, self._v_rows, self._v_columns, self._h_rows):
            spin.valueChanged.connect(self._design_timer.start)
        for spin in (self._h_columns, self._mask_a, self._mask_b):
            spin.valueChanged.connect(self._design_timer.start)
        self._design_timer.timeout.connect(self._on_design_changed)
        for panel in self._panels.values():
            panel.cells.sigCellHovered.connect(self._on_cell_hovered)
            panel.cells.sigCellClicked.connect(self._on_cell_clicked)
        self._thread.sigDone.connect(self._on_job_done)
        self._thread.sigProgress.connect(self._on_job_progress)
        self._thread.sigFailed.connect(self._on_job_failed)
        # the thread must end before the view and its children are deleted,
        # however the view goes: closed, quit with the application, or deleted
        self.destroyed.connect(self._thread.stop)
        application = QCoreApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shutdown)

        # initial update: networks are set now, measured once the view is shown
        self._panels["loaded"].network = context.model
        self._update_block_range()
        self._update_titles()
        for panel in self._panels.values():
            panel.show_message("measuring starts when this view is shown")

    # ------------------------------------------------------------ public

    def panel(self, key: str) -> FieldPanel:
        return self._panels[key]

    def start(self):
        """Builds the designs and starts measuring; called on first show."""
        if self._started:
            return
        self._started = True
        self._restart(self._panels["loaded"], self._context.model)
        self._on_design_changed()

    def select(self, i: int, j: int):
        self._position = (i, j)
        self._show_position()

    def set_trace(self, stream: str, block: int = 0):
        self._stream.setCurrentIndex([s for _, s in STREAMS].index(stream))
        self._block.setValue(block)

    def is_settled(self) -> bool:
        """Whether every panel shows the map asked for (the sweep may still run)."""
        return all(p.wanted is None or p.shown == p.wanted for p in self._panels.values())

    def all_measured(self) -> bool:
        return all(panel.output_ready.all() for panel in self._panels.values())

    def shutdown(self):
        """Stops the worker thread and waits for it; safe to call more than once."""
        self._design_timer.stop()
        self._thread.stop()

    # ------------------------------------------------------------ events

    def showEvent(self, event):
        super().showEvent(event)
        self.start()

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)

    def _on_cell_hovered(self, i, j):
        if self._follow.isChecked() and (i, j) != self._position:
            self.select(i, j)

    def _on_cell_clicked(self, i, j):
        # a click pins the pixel: moving the mouse away no longer changes it
        self._follow.setChecked(False)
        self.select(i, j)

    def _on_trace_changed(self, *_):
        self._block_label.setText(str(self._block.value()))
        self._block.setEnabled(self._stream.currentData() != OUTPUT)
        self._show_position()

    def _on_reference_changed(self, *_):
        if not self._started:
            return
        for panel in self._panels.values():
            if panel.network is not None:
                self._restart(panel, panel.network)
        self._show_position()

    def _on_design_changed(self):
        if not self._started:
            self._update_titles()
            return
        sizes = dict(
            blocks=self._layers.value(),
            v_kernel=(self._v_rows.value(), self._v_columns.value()),
            h_kernel=(self._h_rows.value(), self._h_columns.value()),
            first_kernel=self._mask_a.value(),
            masked_kernel=self._mask_b.value(),
            channels=DESIGN_CHANNELS,
        )
        for key, arch in (("two_stream", "two_stream"), ("masked", "masked")):
            panel = self._panels[key]
            try:
                network = design_network(arch, **sizes)
            except PixelCNNError as error:
                self._thread.cancel(f"maps:{key}")
                panel.network = None
                panel.show_message(str(error))
                continue
            self._restart(panel, network)
        self._update_block_range()
        self._update_titles()
        self._show_position()

    def _on_job_done(self, key, ticket, result):
        kind, panel = self._job_panel(key)
        if kind == "maps" and ticket == panel.maps_ticket:
            self._update_progress()
        elif kind == "pixel" and ticket == panel.pixel_ticket:
            panel.requested = None
            stage, i, j, dependency = result
            if stage == OUTPUT:
                panel.output_maps[i, j] = dependency
                panel.output_ready[i, j] = True
            else:
                panel.stage_maps[(stage, i, j)] = dependency
            self._show_panel(panel)

    def _on_job_progress(self, key, ticket, payload):
        kind, panel = self._job_panel(key)
        if kind != "maps" or ticket != panel.maps_ticket:
            return
        _, chunk = payload
        for i, j, dependency in chunk:
            panel.output_maps[i, j] = dependency
            panel.output_ready[i, j] = True
        self._update_progress()
        if panel.wanted is not None and panel.shown != panel.wanted:
            self._show_panel(panel)

    def _on_job_failed(self, key, ticket, message):
        _, panel = self._job_panel(key)
        panel.requested = None
        panel.show_message(message)

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _spin(low, high, value, step=1):
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setValue(value)
        return spin

    def _job_panel(self, key):
        kind, name = key.split(":")
        return kind, self._panels[name]

    def _reference_image(self) -> np.ndarray:
        index = self._reference.currentData()
        if index is not None and index >= 0:
            return self._context.digits[index]
        return np.zeros((SIDE, SIDE), np.float32)

    def _restart(self, panel: FieldPanel, network):
        panel.reset(network, self._reference_image())
        # an answer still on its way belongs to the old network
        panel.pixel_ticket, panel.requested = -1, None
        steps = _output_map_steps(panel.holder)
        panel.maps_ticket = self._thread.submit_steps(f"maps:{panel.key}", steps)
        self._update_progress()

    def _update_block_range(self):
        depths = [p.network.config.blocks for p in self._panels.values() if p.network is not None]
        self._block.setRange(0, max(depths, default=0))
        self._on_trace_changed()

    def _update_titles(self):
        config = self._context.config
        loaded = self._panels["loaded"]
        loaded.title.setText(
            f"<b>Loaded network</b>: {config.arch.replace('_', '-')}, {config.channels} "
            f"channels, {config.blocks} blocks<br><i>{self._context.source}</i>"
        )
        loaded.title.setToolTip(self._context.source)
        layers = self._layers.value()
        self._panels["two_stream"].title.setText(
            f"<b>Two-stream design</b>: {layers} blocks, v {self._v_rows.value()}x"
            f"{self._v_columns.value()}, h {self._h_rows.value()}x{self._h_columns.value()}"
            f"<br><i>random weights, {DESIGN_CHANNELS} channels</i>"
        )
        size_a, size_b = self._mask_a.value(), self._mask_b.value()
        self._panels["masked"].title.setText(
            f"<b>Masked PixelCNN design</b>: {size_a}x{size_a} mask A + {layers} x "
            f"{size_b}x{size_b} mask B<br><i>random weights, {DESIGN_CHANNELS} channels</i>"
        )

    def _show_position(self):
        for panel in self._panels.values():
            if panel.network is None:
                panel.wanted = None
                continue
            stage = stage_name(panel.network, self._stream.currentData(), self._block.value())
            panel.wanted = (stage, *self._position)
            self._show_panel(panel)

    def _show_panel(self, panel: FieldPanel):
        if panel.wanted is None or not self._started:
            return
        stage, i, j = panel.wanted
        dependency = panel.cached(stage, i, j)
        if dependency is not None:
            if panel.shown != panel.wanted:
                panel.show_map(dependency, stage, i, j, self._where(panel, stage))
                self.sigMapShown.emit(panel.key, stage, i, j)
            return

        # not measured yet: ask for this one map ahead of the full sweep, once
        if panel.requested == panel.wanted:
            return
        holder = panel.holder
        panel.requested = panel.wanted
        panel.pixel_ticket = self._thread.submit(
            f"pixel:{panel.key}",
            lambda _: (stage, i, j, holder.get().dependency_map(stage, i, j)),
        )

    def _where(self, panel: FieldPanel, stage: str) -> str:
        if stage == OUTPUT:
            return "output logit"
        depth = int(stage[1:])
        if isinstance(panel.network, MaskedPixelCNN):
            return f"masked stack after layer {depth}"
        name = "vertical stream v" if stage[0] == "v" else "horizontal stream h"
        return f"{name} after block {depth}" if depth else f"{name} after the input layers"

    def _update_progress(self):
        measured = sum(int(p.output_ready.sum()) for p in self._panels.values())
        total = SIDE * SIDE * sum(p.network is not None for p in self._panels.values())
        self._progress.setRange(0, max(total, 1))
        self._progress.setValue(measured)
        if measured < total:
            self._status.setText(
                f"measuring every output pixel's gradient map: {measured:,} of {total:,}; "
                "a click is answered ahead of the sweep"
            )
        else:
            self._status.setText(
                f"all {total:,} output maps measured and cached: hover or click for a lookup"
            )

    @staticmethod
    def _legend_html() -> str:
        # each entry stays on one line; the legend wraps between entries on a narrow screen
        def entry(swatches, text):
            return f"<span style='white-space:nowrap'>{swatches}&nbsp;{text}</span>"

        def swatch(color):
            r, g, b = (int(c) for c in color)
            return f"<span style='background-color:rgb({r},{g},{b});'>&nbsp;&nbsp;</span>"

        ramp = "".join(
            swatch(MAP_TABLE[index]) for index in np.linspace(RAMP_FIRST, RAMP_LAST, 8).astype(int)
        )
        entries = [
            entry(ramp, f"depends on it: |gradient|, log scale over {DECADES} decades"),
            entry(swatch(COLORS[MISSED]), "before it, not seen"),
            entry(swatch(COLORS[FUTURE]), "the pixel and after it: must stay empty"),
            entry(swatch(COLORS[LEAKED]), "depends on the future (a bug)"),
            entry("<span style='color:#ff28c8'><b>&#9633;</b></span>", "the pixel"),
        ]
        return "&nbsp;&nbsp;&nbsp; ".join(entries)


if __name__ == "__main__":
    sys.exit(run_standalone(ReceptiveFieldView))
