"""A grid of cells drawn from an index image and a lookup table, with hover and click.

Every view that shows pixels (dependency maps, padded inputs, digits) draws
a uint8 index image through a fixed 256-entry table, so an update is one
array upload; row 0 is at the top, as in the image.
"""

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsRectItem


def lookup_table(colors: dict[int, tuple[int, int, int]], ramp=None, ramp_range=(0, 0)):
    """A 256x3 uint8 table: `ramp` (a pyqtgraph colormap name) fills ramp_range, then `colors`."""
    table = np.zeros((256, 3), dtype=np.uint8)
    first, last = ramp_range
    if ramp is not None and last > first:
        colormap = pg.colormap.get(ramp)
        table[first : last + 1] = colormap.getLookupTable(nPts=last - first + 1, alpha=False)
    for index, color in colors.items():
        table[index] = color
    return table


class CellImage(pg.GraphicsLayoutWidget):
    """Cells of an index image; emits the (row, column) under the mouse."""

    sigCellHovered = Signal(int, int)
    sigCellClicked = Signal(int, int)

    def __init__(self, table: np.ndarray, grid_lines: bool = False, parent=None):
        super().__init__(parent)

        # create
        self._view = pg.ViewBox(lockAspect=True, invertY=True, enableMouse=False, enableMenu=False)
        self._view.setDefaultPadding(0.01)
        self._image = pg.ImageItem(axisOrder="row-major")
        self._image.setLookupTable(table)
        self._grid = pg.PlotCurveItem(pen=pg.mkPen(150, 150, 150, 160, width=1), connect="pairs")
        self._grid_lines = grid_lines
        self._markers: dict[str, QGraphicsRectItem] = {}
        self._shape = (0, 0)

        # layout
        self.setBackground("w")
        self.ci.setContentsMargins(2, 2, 2, 2)
        self.addItem(self._view)
        self._view.addItem(self._image)
        self._view.addItem(self._grid)
        self.setMinimumSize(160, 160)

        # connect
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)

    @property
    def cells(self) -> np.ndarray:
        return self._image.image

    def set_cells(self, cells: np.ndarray):
        """Shows a uint8 index image; levels stay fixed at the table's 0..255."""
        cells = np.ascontiguousarray(cells, dtype=np.uint8)
        self._image.setImage(cells, levels=(0, 255), autoLevels=False)
        if cells.shape != self._shape:
            self._shape = cells.shape
            self._image.setRect(QRectF(0, 0, cells.shape[1], cells.shape[0]))
            self._view.setRange(QRectF(0, 0, cells.shape[1], cells.shape[0]), padding=0.01)
            self._draw_grid()

    def clear(self):
        """Shows nothing, for when the controls describe an impossible layer."""
        self._image.clear()
        self._shape = (0, 0)
        self._grid.setData([], [])
        for marker in self._markers.values():
            marker.hide()

    def set_marker(self, name: str, cells, color=(255, 0, 0), width: float = 2.0):
        """Outlines the cells (row, column, rows, columns); None hides the marker."""
        marker = self._markers.get(name)
        if marker is None:
            marker = QGraphicsRectItem()
            marker.setZValue(10)
            self._view.addItem(marker)
            self._markers[name] = marker
        if cells is None:
            marker.hide()
            return
        row, column, rows, columns = cells
        pen = QPen(QColor(*color))
        pen.setWidthF(width)
        pen.setCosmetic(True)
        marker.setPen(pen)
        marker.setRect(QRectF(column, row, columns, rows))
        marker.show()

    def _draw_grid(self):
        if not self._grid_lines:
            return
        H, W = self._shape
        xs, ys = [], []
        for r in range(H + 1):
            xs += [0, W]
            ys += [r, r]
        for c in range(W + 1):
            xs += [c, c]
            ys += [0, H]
        self._grid.setData(np.array(xs, float), np.array(ys, float))

    def _cell_at(self, scene_position):
        point = self._view.mapSceneToView(scene_position)
        row, column = math.floor(point.y()), math.floor(point.x())
        H, W = self._shape
        if 0 <= row < H and 0 <= column < W:
            return row, column
        return None

    def _on_mouse_moved(self, scene_position):
        cell = self._cell_at(scene_position)
        if cell is not None:
            self.sigCellHovered.emit(*cell)

    def _on_mouse_clicked(self, event):
        if event.button() != Qt.MouseButton.LeftButton:
            return
        cell = self._cell_at(event.scenePos())
        if cell is not None:
            self.sigCellClicked.emit(*cell)
