"""Logits and residuals: why the loss takes logits, and why the blocks are residual.

Pick a pixel of a digit to see the loaded network's logit there and the loss
computed two ways; beside it, the gradient reaching each block of a fresh
network of the same configuration, with and without the skip connections.

    python -m gui.logits_view [--checkpoint assets/pixelcnn.pt]
"""

import sys
from dataclasses import replace

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QCoreApplication, Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics import (
    block_gradient_norms,
    float32_sigmoid_saturation,
    loss_from_logits,
    loss_from_probability,
    pixel_losses,
)
from gui.cell_image import CellImage
from gui.view_context import SIDE, ViewContext, light_plot, run_standalone
from gui.view_thread import JobThread

BLUE, ORANGE, MAGENTA = (31, 119, 180), (255, 127, 14), (255, 40, 200)
BATCH = 8  # digits per gradient measurement


def _ramp_table(dark=(20, 40, 120)) -> np.ndarray:
    """White to `dark`, 256 entries: index = round(255 * value)."""
    weight = np.linspace(0, 1, 256)[:, None]
    return np.round(255 * (1 - weight) + np.array(dark) * weight).astype(np.uint8)


def _cell(value: float) -> str:
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def digit_logits(model, digit: np.ndarray) -> np.ndarray:
    """The network's logits [28, 28] for one binary digit, without gradients."""
    with torch.no_grad():
        return model(torch.from_numpy(digit)[None, None]).numpy()[0, 0]


class LogitsView(QWidget):
    """A digit and its p(ink) map, one pixel's losses, and block gradient norms."""

    def __init__(self, context: ViewContext, parent=None):
        super().__init__(parent)
        self._context = context
        self._position = (14, 14)
        self._logits: np.ndarray | None = None
        self._tickets = {"logits": -1, "residual": -1}
        self._thread = JobThread(self)
        self._residual_timer = QTimer(self, singleShot=True, interval=300)
        self._started = False
        self.residual_result = None

        # create
        self._digit_choice = QComboBox()
        for index in context.example_indices(count=30):
            self._digit_choice.addItem(context.digit_names[index], index)
        self._digit = CellImage(_ramp_table((0, 0, 0)))
        self._probability = CellImage(_ramp_table())
        self._pixel = QLabel()
        self._pixel.setWordWrap(True)
        self._losses = QTableWidget(3, 2)
        self._losses.setHorizontalHeaderLabels(["loss (nats)", "d loss / d logit"])
        self._losses.setVerticalHeaderLabels(
            [
                "BCE with logits (stable)",
                "sigmoid in float32, then log",
                "exact (float64)",
            ]
        )
        self._losses.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self._losses.horizontalHeader().setStretchLastSection(True)
        rows_height = 3 * self._losses.verticalHeader().defaultSectionSize()
        header_height = self._losses.horizontalHeader().sizeHint().height()
        self._losses.setFixedHeight(rows_height + header_height + 2 * self._losses.frameWidth())
        self._loss_plot = light_plot()
        self._loss_plot.setMinimumHeight(240)
        # bounded so one measurement stays within seconds on a laptop CPU
        self._blocks = self._spin(1, 24, min(context.config.blocks, 24))
        self._channels = self._spin(4, 64, min(context.config.channels, 64))
        self._residual_plot = light_plot()
        self._residual_note = QLabel()
        self._residual_note.setWordWrap(True)

        # layout
        pictures = QGridLayout()
        pictures.addWidget(QLabel("digit (click a pixel)"), 0, 0)
        pictures.addWidget(QLabel("p(ink | the pixels before it)"), 0, 1)
        pictures.addWidget(self._digit, 1, 0)
        pictures.addWidget(self._probability, 1, 1)
        logits_box = QGroupBox("Why the loss takes logits")
        logits_layout = QVBoxLayout(logits_box)
        choice = QHBoxLayout()
        choice.addWidget(QLabel("digit"))
        choice.addWidget(self._digit_choice, stretch=1)
        source = QLabel(f"<i>network: {context.source}</i>")
        source.setWordWrap(True)
        logits_layout.addLayout(choice)
        logits_layout.addWidget(source)
        logits_layout.addLayout(pictures, stretch=3)
        logits_layout.addWidget(self._pixel)
        logits_layout.addWidget(self._losses)
        logits_layout.addWidget(self._loss_plot, stretch=3)
        residual_box = QGroupBox("Why the blocks are residual")
        residual_layout = QVBoxLayout(residual_box)
        sizes = QHBoxLayout()
        for text, spin in (("blocks", self._blocks), ("channels", self._channels)):
            sizes.addWidget(QLabel(text))
            sizes.addWidget(spin)
        sizes.addStretch(1)
        residual_layout.addLayout(sizes)
        residual_layout.addWidget(self._residual_plot, stretch=1)
        residual_layout.addWidget(self._residual_note)
        layout = QHBoxLayout(self)
        layout.addWidget(logits_box, stretch=3)
        layout.addWidget(residual_box, stretch=2)

        # connect
        self._digit_choice.currentIndexChanged.connect(self._on_digit_changed)
        self._digit.sigCellClicked.connect(self._on_cell_clicked)
        self._probability.sigCellClicked.connect(self._on_cell_clicked)
        self._blocks.valueChanged.connect(self._residual_timer.start)
        self._channels.valueChanged.connect(self._residual_timer.start)
        self._residual_timer.timeout.connect(self._on_residual_settings_changed)
        self._thread.sigDone.connect(self._on_job_done)
        self._thread.sigFailed.connect(self._on_job_failed)
        self.destroyed.connect(self._thread.stop)
        application = QCoreApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shutdown)

        # initial update: the digit now, the networks once the view is shown
        self._draw_digit()
        self._draw_loss_curves(1.0, None)
        self._pixel.setText("computing the network's logits…")
        self._residual_note.setText("measured once this view is shown")

    # ------------------------------------------------------------ public

    def start(self):
        if self._started:
            return
        self._started = True
        self._on_digit_changed()
        self._on_residual_settings_changed()

    def select(self, i: int, j: int):
        self._position = (i, j)
        self._draw_digit()
        self._draw_pixel()

    def pixel_report(self) -> dict | None:
        """The numbers shown for the picked pixel (logit, losses, gradients)."""
        if self._logits is None:
            return None
        i, j = self._position
        return pixel_losses(float(self._logits[i, j]), float(self._digit_array()[i, j]))

    def is_settled(self) -> bool:
        """Whether the logits and the block gradients are in."""
        return self._logits is not None and self.residual_result is not None

    def shutdown(self):
        self._residual_timer.stop()
        self._thread.stop()

    # ------------------------------------------------------------ events

    def showEvent(self, event):
        super().showEvent(event)
        self.start()

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)

    def _on_digit_changed(self, *_):
        self._logits = None
        self._draw_digit()
        model, digit = self._context.model, self._digit_array()
        measure = lambda _: digit_logits(model, digit)
        self._tickets["logits"] = self._thread.submit("logits", measure)

    def _on_cell_clicked(self, i, j):
        self.select(i, j)

    def _on_residual_settings_changed(self):
        if not self._started:
            return
        config = replace(self._context.config, blocks=self._blocks.value())
        config = replace(config, channels=self._channels.value(), dropout=0.0)
        examples = self._context.example_indices(count=BATCH)
        images = torch.from_numpy(self._context.digits[examples])[:, None]

        def measure(should_stop):
            with_skip, loss = block_gradient_norms(config, images, True, should_stop=should_stop)
            without_skip, plain_loss = block_gradient_norms(
                config, images, False, should_stop=should_stop
            )
            return config, with_skip, without_skip, loss, plain_loss

        self._residual_note.setText(
            f"building two {config.blocks}-block networks of {config.channels} channels and "
            "back-propagating a batch of digits…"
        )
        self._tickets["residual"] = self._thread.submit("residual", measure)

    def _on_job_done(self, key, ticket, result):
        if ticket != self._tickets.get(key):
            return
        if key == "logits":
            self._logits = result
            self._draw_digit()
            self._draw_pixel()
        elif key == "residual":
            self.residual_result = result
            self._draw_residuals(*result)

    def _on_job_failed(self, key, ticket, message):
        if key == "logits":
            self._pixel.setText(message)
        else:
            self._residual_note.setText(message)

    # ------------------------------------------------------------ drawing

    @staticmethod
    def _spin(low, high, value):
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        return spin

    def _digit_array(self) -> np.ndarray:
        index = self._digit_choice.currentData()
        return self._context.digits[index if index is not None else 0]

    def _draw_digit(self):
        digit = self._digit_array()
        self._digit.set_cells(np.round(digit * 255))
        if self._logits is not None:
            probability = 1 / (1 + np.exp(-self._logits.astype(np.float64)))
            self._probability.set_cells(np.round(probability * 255))
        else:
            self._probability.set_cells(np.zeros((SIDE, SIDE)))
        i, j = self._position
        for picture in (self._digit, self._probability):
            picture.set_marker("pixel", (i, j, 1, 1), MAGENTA, 2.5)

    def _draw_pixel(self):
        report = self.pixel_report()
        if report is None:
            return
        i, j = self._position
        ink = "ink (1)" if report["target"] > 0.5 else "no ink (0)"
        digit = self._digit_array()
        logits = torch.from_numpy(self._logits)
        targets = torch.from_numpy(digit)
        stable = float(loss_from_logits(logits, targets).sum())
        rounded = float(loss_from_probability(logits, targets).sum())
        saturated = int(torch.isinf(loss_from_probability(logits, targets)).sum())
        self._pixel.setText(
            f"pixel ({i}, {j}) is {ink}. Logit l = <b>{report['logit']:.4f}</b>, "
            f"p(ink) = sigmoid(l) = <b>{report['probability']:.6g}</b> (float32).<br>"
            f"Whole digit: NLL {stable:.3f} nats from the logits, {_cell(rounded)} nats "
            f"through float32 probabilities ({saturated} of 784 pixels give inf)."
        )
        rows = (
            (report["logits_loss"], report["logits_gradient"]),
            (report["probability_loss"], report["probability_gradient"]),
            (report["exact_loss"], float(1 / (1 + np.exp(-report["logit"])) - report["target"])),
        )
        for row, values in enumerate(rows):
            for column, value in enumerate(values):
                self._losses.setItem(row, column, QTableWidgetItem(_cell(value)))
        self._draw_loss_curves(report["target"], report["logit"])

    def _draw_loss_curves(self, target: float, logit: float | None):
        plot = self._loss_plot
        plot.clear()
        plot.addLegend(offset=(-10, 5), labelTextColor=(30, 30, 30), colCount=2)
        span = np.linspace(-30, 30, 601, dtype=np.float32)
        logits = torch.from_numpy(span)
        edge = float32_sigmoid_saturation()

        # both targets: with no ink, 1 - sigmoid(l) rounds to 0 once l passes the edge
        for value, name, color in ((1.0, "ink", BLUE), (0.0, "no ink", ORANGE)):
            targets = torch.full_like(logits, value)
            stable = loss_from_logits(logits, targets).numpy()
            rounded = loss_from_probability(logits, targets).numpy()
            width = 4 if value == target else 2
            pen = pg.mkPen(color, width=width)
            plot.plot(span, stable, pen=pen, name=f"{name}, from the logit")

            # inf cannot be drawn: the rounded curve stops where it overflows, marked by x
            finite = np.isfinite(rounded)
            plot.plot(
                span[finite],
                rounded[finite],
                pen=pg.mkPen((40, 40, 40), width=2, style=Qt.PenStyle.DashLine),
                name="either, sigmoid then log (dashed)" if value == 0.0 else None,
            )
            if not finite.all():
                first = span[~finite][0]
                plot.plot(
                    [first],
                    [float(stable[~finite][0])],
                    pen=None,
                    symbol="x",
                    symbolSize=14,
                    symbolBrush=(200, 0, 0),
                    symbolPen=pg.mkPen(200, 0, 0, width=2),
                    name="inf from here on",
                )
        if logit is not None:
            plot.addItem(pg.InfiniteLine(logit, angle=90, pen=pg.mkPen(MAGENTA, width=2)))
        plot.setTitle(
            f"loss against logit (magenta: the picked pixel); float32 sigmoid is "
            f"exactly 1 above l = {edge:.2f}",
            color="k",
        )
        plot.setLabel("bottom", "logit l")
        plot.setLabel("left", "loss (nats)")
        plot.setYRange(-1, 46, padding=0)  # room above the curves for the legend

    def _draw_residuals(self, config, with_skip, without_skip, loss, plain_loss):
        plot = self._residual_plot
        plot.clear()
        plot.addLegend(offset=(-10, -10), labelTextColor=(30, 30, 30))
        plot.setLogMode(y=True)
        blocks = np.arange(1, len(with_skip) + 1)
        for norms, name, color in (
            (with_skip, "with the skip: x + f(x)", BLUE),
            (without_skip, "without it: f(x) alone", ORANGE),
        ):
            # a log axis cannot show 0: such a block is drawn at the floor
            shown = np.maximum(norms, 1e-30)
            plot.plot(
                blocks,
                shown,
                pen=pg.mkPen(color, width=2),
                symbol="o",
                symbolBrush=color,
                name=name,
            )
        every = max(1, len(blocks) // 10)
        plot.getAxis("bottom").setTicks([[(int(b), str(b)) for b in blocks[::every]]])
        plot.setLabel("bottom", "block (1 = nearest the input)")
        plot.setLabel("left", "|d loss / d block parameters|")
        plot.setTitle("gradient reaching each block at initialization", color="k")
        plot.showGrid(y=True, alpha=0.3)

        def ratio(norms):
            return norms[0] / norms[-1] if norms[-1] > 0 else float("nan")

        self._residual_note.setText(
            f"A fresh {config.arch.replace('_', '-')} network of {config.blocks} blocks and "
            f"{config.channels} channels (the loaded network's configuration unless changed "
            f"above), one batch of {BATCH} digits; both variants share every weight. Block 1 "
            f"gets {ratio(with_skip):.3g} times the gradient of block {config.blocks} with "
            f"the skip, {ratio(without_skip):.3g} times without it. Loss at init: "
            f"{loss:.1f} and {plain_loss:.1f} nats."
        )


if __name__ == "__main__":
    sys.exit(run_standalone(LogitsView))
