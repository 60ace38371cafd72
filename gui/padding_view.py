"""Padding views: how 'valid', 'same' and the shifted convolutions pad their input.

An input grid and a kernel of chosen sizes; the padded cells are shaded apart
from the image, the kernel's window moves over them (by click or by play),
and the output grid's size is given by the formula and checked with PyTorch.

    python -m gui.padding_view
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F
from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.errors import PixelCNNError
from engine.receptive_field import PADDING_MODES, layer_shapes, stacked_reach
from gui.cell_image import CellImage, lookup_table
from gui.view_context import ViewContext, run_standalone

MODE_NAMES = {
    "valid": "valid (no padding)",
    "same": "same (Keras/TensorFlow)",
    "down_shifted": "down-shifted (PixelCNN++)",
    "down_right_shifted": "down-right-shifted (PixelCNN++)",
}

# index-image codes
PAD, IMAGE, PAD_READ, IMAGE_READ, OUT, OUT_CURRENT = range(6)
TABLE = lookup_table(
    {
        PAD: (205, 205, 210),
        IMAGE: (255, 255, 255),
        PAD_READ: (150, 160, 200),
        IMAGE_READ: (95, 145, 235),
        OUT: (255, 255, 255),
        OUT_CURRENT: (245, 160, 60),
    }
)


def torch_output_shape(mode, kernel, shape, stride, layers) -> tuple[int, int]:
    """The shape F.conv2d gives after padding the way `mode` says, layer after layer."""
    x = torch.zeros(1, 1, *shape)
    weight = torch.ones(1, 1, *kernel)
    for _, padding in layer_shapes(mode, kernel, shape, stride, layers)[:-1]:
        x = F.conv2d(F.pad(x, padding.as_pad()), weight, stride=stride)
    return tuple(x.shape[-2:])


class PaddingView(QWidget):
    """Input and kernel sizes, padding mode, stride and depth; window and output drawn live."""

    sigLayoutChanged = Signal(object)  # the output shape, after every change

    def __init__(self, context: ViewContext | None = None, parent=None):
        super().__init__(parent)
        self._position = (0, 0)
        self._plan = None
        self._timer = QTimer(self, interval=600)

        # create
        self._rows, self._columns = self._spin(1, 14, 6), self._spin(1, 14, 6)
        self._kernel_rows, self._kernel_columns = self._spin(1, 7, 2), self._spin(1, 7, 3)
        self._mode = QComboBox()
        for mode in PADDING_MODES:
            self._mode.addItem(MODE_NAMES[mode], mode)
        self._mode.setCurrentIndex(PADDING_MODES.index("down_shifted"))
        self._stride = self._spin(1, 3, 1)
        self._layers = self._spin(1, 6, 1)
        self._play = QPushButton("Play")
        self._play.setCheckable(True)
        self._input = CellImage(TABLE, grid_lines=True)
        self._output = CellImage(TABLE, grid_lines=True)
        self._input_title = QLabel()
        self._output_title = QLabel()
        self._formula = QLabel()
        self._formula.setTextFormat(Qt.TextFormat.RichText)
        self._formula.setWordWrap(True)
        self._formula.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # layout
        controls = QHBoxLayout()
        pairs = [
            ("input", self._rows),
            ("x", self._columns),
            ("kernel", self._kernel_rows),
            ("x", self._kernel_columns),
            ("padding", self._mode),
            ("stride", self._stride),
            ("layers", self._layers),
        ]
        for text, widget in pairs:
            controls.addWidget(QLabel(text))
            controls.addWidget(widget)
        controls.addWidget(self._play)
        controls.addStretch(1)
        grids = QGridLayout()
        grids.addWidget(self._input_title, 0, 0)
        grids.addWidget(self._output_title, 0, 1)
        grids.addWidget(self._input, 1, 0)
        grids.addWidget(self._output, 1, 1)
        grids.setColumnStretch(0, 3)
        grids.setColumnStretch(1, 2)
        grids.setRowStretch(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addLayout(grids, stretch=1)
        layout.addWidget(self._formula)

        # connect
        for spin in (self._rows, self._columns, self._kernel_rows, self._kernel_columns):
            spin.valueChanged.connect(self._on_controls_changed)
        self._stride.valueChanged.connect(self._on_controls_changed)
        self._layers.valueChanged.connect(self._on_controls_changed)
        self._mode.currentIndexChanged.connect(self._on_controls_changed)
        self._play.toggled.connect(self._on_play_toggled)
        self._timer.timeout.connect(self._on_tick)
        self._output.sigCellClicked.connect(self._on_output_clicked)
        application = QCoreApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shutdown)

        # initial update
        self._on_controls_changed()

    # ------------------------------------------------------------ public

    def configure(self, rows, columns, kernel, mode, stride=1, layers=1):
        """Sets every control at once (one redraw), as a user could by hand."""
        widgets = (self._rows, self._columns, self._kernel_rows, self._kernel_columns)
        for widget in (*widgets, self._stride, self._layers, self._mode):
            widget.blockSignals(True)
        for widget, value in zip(widgets, (rows, columns, *kernel), strict=True):
            widget.setValue(value)
        self._mode.setCurrentIndex(PADDING_MODES.index(mode))
        self._stride.setValue(stride)
        self._layers.setValue(layers)
        for widget in (*widgets, self._stride, self._layers, self._mode):
            widget.blockSignals(False)
        self._on_controls_changed()

    def output_shape(self) -> tuple[int, int] | None:
        """The output grid as drawn, or None when the layer is impossible."""
        cells = self._output.cells
        return None if cells is None or self._plan is None else tuple(cells.shape)

    def select(self, row: int, column: int):
        self._position = (row, column)
        self._draw()

    def shutdown(self):
        self._timer.stop()

    # ------------------------------------------------------------ events

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)

    def _on_controls_changed(self, *_):
        shifted = self._mode.currentData() != "valid" and self._mode.currentData() != "same"
        if shifted and self._stride.value() != 1:
            self._stride.blockSignals(True)
            self._stride.setValue(1)
            self._stride.blockSignals(False)
        self._stride.setEnabled(not shifted)

        try:
            self._plan = layer_shapes(*self._settings())
        except PixelCNNError as error:
            self._plan = None
            self._show_error(str(error))
            return
        H, W = self._plan[-1][0]
        self._position = (min(self._position[0], H - 1), min(self._position[1], W - 1))
        self._draw()
        self.sigLayoutChanged.emit((H, W))

    def _on_play_toggled(self, playing):
        self._play.setText("Pause" if playing else "Play")
        if playing:
            self._timer.start()
        else:
            self._timer.stop()

    def _on_tick(self):
        # the next output cell in raster order, wrapping around
        if self._plan is None:
            return
        H, W = self._plan[-1][0]
        index = (self._position[0] * W + self._position[1] + 1) % (H * W)
        self.select(*divmod(index, W))

    def _on_output_clicked(self, row, column):
        self.select(row, column)

    # ------------------------------------------------------------ drawing

    @staticmethod
    def _spin(low, high, value):
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        return spin

    def _settings(self):
        mode = self._mode.currentData()
        kernel = (self._kernel_rows.value(), self._kernel_columns.value())
        shape = (self._rows.value(), self._columns.value())
        return mode, kernel, shape, self._stride.value(), self._layers.value()

    def _show_error(self, message):
        self._input.clear()
        self._output.clear()
        self._input_title.setText("")
        self._output_title.setText("")
        self._formula.setText(f"<span style='color:#c00'>{message}</span>")
        self.sigLayoutChanged.emit(None)

    def _draw(self):
        if self._plan is None:
            return
        mode, kernel, shape, stride, layers = self._settings()
        (H, W), padding = self._plan[0]
        out_shape = self._plan[-1][0]
        reach = stacked_reach(mode, kernel, shape, self._position, stride, layers)

        # the padded input of the first layer, with what the output cell reads
        cells = np.full(reach.shape, PAD, np.uint8)
        cells[padding.top : padding.top + H, padding.left : padding.left + W] = IMAGE
        is_image = cells == IMAGE
        cells[reach & is_image] = IMAGE_READ
        cells[reach & ~is_image] = PAD_READ
        self._input.set_cells(cells)
        self._input.set_marker("image", (padding.top, padding.left, H, W), (0, 0, 0), 2.5)
        rows, columns = np.nonzero(reach)
        box = (rows.min(), columns.min(), np.ptp(rows) + 1, np.ptp(columns) + 1)
        self._input.set_marker("window", box, (230, 120, 20), 3.0)

        output = np.full(out_shape, OUT, np.uint8)
        output[self._position] = OUT_CURRENT
        self._output.set_cells(output)

        padded = f"{H + padding.top + padding.bottom}x{W + padding.left + padding.right}"
        self._input_title.setText(
            f"<b>input {H}x{W}</b>, padded to {padded} for layer 1 (grey: padding; "
            f"blue: what output ({self._position[0]}, {self._position[1]}) reads"
            + (f" through {layers} layers)" if layers > 1 else ")")
        )
        self._output_title.setText(
            f"<b>output {out_shape[0]}x{out_shape[1]}</b>"
            + (f" after {layers} layers" if layers > 1 else "")
            + " (click a cell, or play)"
        )
        self._formula.setText(self._formula_html(mode, kernel, stride, out_shape, reach))

    def _formula_html(self, mode, kernel, stride, out_shape, reach) -> str:
        kh, kw = kernel
        lines = [
            "output = &lfloor;(i + p<sub>before</sub> + p<sub>after</sub> &minus; k) / s"
            "&rfloor; + 1 &nbsp; (Dumoulin &amp; Visin, with the 2p of even padding split "
            "in two)"
        ]
        for layer, ((H, W), padding) in enumerate(self._plan[:-1], start=1):
            out_rows = (H + padding.top + padding.bottom - kh) // stride + 1
            out_columns = (W + padding.left + padding.right - kw) // stride + 1
            lines.append(
                f"layer {layer}: pads top {padding.top}, bottom {padding.bottom}, left "
                f"{padding.left}, right {padding.right}; rows &lfloor;({H} + {padding.top} + "
                f"{padding.bottom} &minus; {kh}) / {stride}&rfloor; + 1 = {out_rows}; columns "
                f"&lfloor;({W} + {padding.left} + {padding.right} &minus; {kw}) / {stride}"
                f"&rfloor; + 1 = {out_columns}"
            )

        layers = len(self._plan) - 1
        measured = torch_output_shape(mode, kernel, self._plan[0][0], stride, layers)
        agrees = "agrees" if measured == tuple(out_shape) else "<b>disagrees</b>"
        lines.append(
            f"PyTorch: F.conv2d on the padded tensor gives {measured[0]}x{measured[1]} ({agrees})"
        )

        # where the output cell's inputs lie, relative to its own position
        padding = self._plan[0][1]
        rows, columns = np.nonzero(reach)
        first_row, last_row = rows.min() - padding.top, rows.max() - padding.top
        first_column, last_column = columns.min() - padding.left, columns.max() - padding.left
        r, c = self._position
        lines.append(
            f"output ({r}, {c}) reads input rows {first_row}..{last_row} and columns "
            f"{first_column}..{last_column} (indices outside the image are padding)"
        )
        if mode != "valid" and stride == 1:
            lines.append(
                f"that is {_count(r - first_row, 'row')} up, {_count(last_row - r, 'row')} "
                f"down, {_count(c - first_column, 'column')} left and "
                f"{_count(last_column - c, 'column')} right of its own position"
            )
        return "<br>".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


if __name__ == "__main__":
    sys.exit(run_standalone(PaddingView))
