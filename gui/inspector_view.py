"""Model inspector: the loaded network's layers, parameters, training curves and activations.

Each layer's parameter count stands beside its closed form; the curves come
from the run's metrics.jsonl and follow it while a run is writing it.

    python -m gui.inspector_view [--checkpoint assets/pixelcnn.pt] [--metrics runs/x/metrics.jsonl]
"""

import math
import sys
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QCoreApplication, QFileSystemWatcher, Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics import activation_curves, read_metrics
from engine.errors import PixelCNNError
from engine.model import count_parameters, layer_summary
from gui.view_context import ViewContext, light_plot, run_standalone

FORMULA = "in·out·kh·kw + out"
COLUMNS = ("layer", "type", "kernel", "in", "out", "parameters", "closed form", FORMULA)
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
PIXELCNN_NATS = 81.30  # van den Oord et al. 2016, PixelCNN on binarized MNIST
BLUE, ORANGE, GREY = (31, 119, 180), (255, 127, 14), (120, 120, 120)


class InspectorView(QWidget):
    """Layer table with totals, training curves from the metrics log, ELU and ReLU."""

    def __init__(self, context: ViewContext, parent=None):
        super().__init__(parent)
        self._context = context
        self._metrics_path = Path(context.metrics_path) if context.metrics_path else None
        self._watcher = QFileSystemWatcher(self)
        self._reload_timer = QTimer(self, singleShot=True, interval=500)

        # create
        self._source = QLabel()
        self._source.setWordWrap(True)
        self._table = QTableWidget(0, len(COLUMNS))
        self._table.setHorizontalHeaderLabels(COLUMNS)
        self._table.verticalHeader().setVisible(False)
        self._table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self._table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self._total = QLabel()
        self._total.setWordWrap(True)
        self._curves = light_plot()
        self._curves_note = QLabel()
        self._curves_note.setWordWrap(True)
        self._activations = light_plot()

        # layout
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self._table, stretch=1)
        left_layout.addWidget(self._total)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self._curves, stretch=1)
        right_layout.addWidget(self._curves_note)
        right_layout.addWidget(self._activations, stretch=1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([720, 640])
        layout = QVBoxLayout(self)
        layout.addWidget(self._source)
        layout.addWidget(splitter, stretch=1)

        # connect
        self._watcher.fileChanged.connect(self._reload_timer.start)
        self._watcher.directoryChanged.connect(self._reload_timer.start)
        self._reload_timer.timeout.connect(self._on_metrics_changed)
        application = QCoreApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shutdown)

        # initial update
        self._fill_table()
        self._draw_activations()
        self._watch_metrics()
        self._on_metrics_changed()

    # ------------------------------------------------------------ public

    def total_shown(self) -> int:
        """The total parameter count as the table's last row shows it."""
        item = self._table.item(self._table.rowCount() - 1, COLUMNS.index("parameters"))
        return int(item.text().replace(",", ""))

    def epochs_plotted(self) -> int:
        return self._epochs_plotted

    def shutdown(self):
        self._reload_timer.stop()
        paths = self._watcher.files() + self._watcher.directories()
        if paths:
            self._watcher.removePaths(paths)

    # ------------------------------------------------------------ events

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)

    def _on_metrics_changed(self):
        self._watch_metrics()
        self._draw_curves()

    # ------------------------------------------------------------ drawing

    def _fill_table(self):
        model, config = self._context.model, self._context.config
        rows = layer_summary(model)
        self._table.setRowCount(len(rows) + 1)
        for index, row in enumerate(rows):
            kh, kw = row["kernel"]
            cells = (
                row["name"],
                row["type"],
                f"{kh}x{kw}",
                str(row["in"]),
                str(row["out"]),
                f"{row['params']:,}",
                f"{row['closed_form']:,}",
                f"{row['in']}·{row['out']}·{kh}·{kw} + {row['out']}",
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if 3 <= column < 7:
                    item.setTextAlignment(RIGHT)
                if column == 5 and row["params"] != row["closed_form"]:
                    item.setForeground(Qt.GlobalColor.red)
                self._table.setItem(index, column, item)

        # the last row: the model's own count, beside the sum of the rows
        total = count_parameters(model)
        of_rows = sum(row["params"] for row in rows)
        closed = sum(row["closed_form"] for row in rows)
        bold = QFont()
        bold.setBold(True)
        for column, text in ((0, "total"), (5, f"{total:,}"), (6, f"{closed:,}")):
            item = QTableWidgetItem(text)
            item.setFont(bold)
            if column:
                item.setTextAlignment(RIGHT)
            self._table.setItem(len(rows), column, item)
        header = self._table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

        self._source.setText(
            f"<b>{config.arch.replace('_', '-')} PixelCNN</b>, {config.channels} channels, "
            f"{config.blocks} blocks &mdash; <i>{self._context.source}</i>"
        )
        match = "equals" if of_rows == total == closed else "<b>differs from</b>"
        self._total.setText(
            f"{len(rows)} convolutions. The model's {total:,} parameters (sum of "
            f"model.parameters()) {match} the sum of the rows, {of_rows:,}, and of their "
            f"closed forms, {closed:,}. A mask zeroes weights but keeps them, so a masked "
            "layer counts them too."
        )

    def _watch_metrics(self):
        if self._metrics_path is None:
            return
        # a file that does not exist yet is caught by watching its folder
        for path in (self._metrics_path, self._metrics_path.parent):
            if (
                path.exists()
                and str(path) not in self._watcher.files() + self._watcher.directories()
            ):
                self._watcher.addPath(str(path))

    def _draw_curves(self):
        plot = self._curves
        plot.clear()
        plot.setTitle("training: NLL per epoch (nats per image, lower is better)", color="k")
        plot.setLabel("bottom", "epoch")
        plot.setLabel("left", "nats per image")
        self._epochs_plotted = 0

        if self._metrics_path is None:
            self._no_curves("no training log was given, so there are no curves to show.")
            return
        if not self._metrics_path.is_file():
            self._no_curves(f"no training log at {self._metrics_path}: no curves to show yet.")
            return
        try:
            records = read_metrics(self._metrics_path)
        except PixelCNNError as error:
            self._no_curves(str(error))
            return
        if not records:
            self._no_curves(f"{self._metrics_path} has no finished epoch yet.")
            return

        plot.addLegend(offset=(-10, 10), labelTextColor=(30, 30, 30))
        epochs = np.array([r["epoch"] for r in records], float)
        for key, name, color in (("train_nll", "train", BLUE), ("val_nll", "validation", ORANGE)):
            values = np.array([_number(r.get(key)) for r in records], float)
            keep = np.isfinite(values)
            if keep.any():
                plot.plot(
                    epochs[keep],
                    values[keep],
                    pen=pg.mkPen(color, width=2),
                    symbol="o",
                    symbolSize=6,
                    symbolBrush=color,
                    name=name,
                )
        reference = pg.InfiniteLine(
            PIXELCNN_NATS,
            angle=0,
            pen=pg.mkPen(GREY, style=Qt.PenStyle.DashLine),
            label=f"PixelCNN (2016): {PIXELCNN_NATS}",
            labelOpts={"position": 0.15, "color": GREY},
        )
        plot.addItem(reference)
        self._epochs_plotted = len(records)

        last = records[-1]
        validation = _number(last.get("val_nll"))
        bits = validation / (784 * math.log(2)) if math.isfinite(validation) else float("nan")
        self._curves_note.setText(
            f"{len(records)} epochs from {self._metrics_path.name}; last validation NLL "
            f"{validation:.2f} nats per image = {bits:.4f} bits per dimension. "
            "The curves follow the file while a run writes it."
        )

    def _no_curves(self, message: str):
        self._curves.addItem(pg.TextItem(message, color=(90, 90, 90), anchor=(0.5, 0.5)))
        self._curves.getPlotItem().getViewBox().setRange(xRange=(-1, 1), yRange=(-1, 1))
        self._curves_note.setText(message)

    def _draw_activations(self):
        plot = self._activations
        x = np.linspace(-4, 3, 281)
        curves = activation_curves(x)
        plot.addLegend(offset=(10, 10), labelTextColor=(30, 30, 30))
        dashed = Qt.PenStyle.DashLine
        plot.plot(x, curves["elu"], pen=pg.mkPen(BLUE, width=2), name="ELU")
        plot.plot(
            x, curves["elu_derivative"], pen=pg.mkPen(BLUE, width=2, style=dashed), name="ELU'"
        )
        plot.plot(x, curves["relu"], pen=pg.mkPen(ORANGE, width=2), name="ReLU")
        plot.plot(
            x, curves["relu_derivative"], pen=pg.mkPen(ORANGE, width=2, style=dashed), name="ReLU'"
        )
        plot.showGrid(x=True, y=True, alpha=0.3)
        plot.setTitle(
            "concat-ELU in the blocks: ELU' = e<sup>x</sup> &gt; 0 below 0, ReLU' = 0 "
            "(slopes by autograd)",
            color="k",
        )


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


if __name__ == "__main__":
    sys.exit(run_standalone(InspectorView))
