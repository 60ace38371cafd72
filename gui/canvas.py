"""The drawing canvas: a 28x28 digit shown large, with pen, eraser and mask tools.

A pyqtgraph view of two images, ink and a semi-transparent mask overlay, both
with fixed levels and a lookup table; mouse input becomes edits of a Drawing.
"""

import logging

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Qt, Signal

from gui.drawing import TOOLS, Drawing, segment_points

log = logging.getLogger(__name__)

PAPER = (255, 255, 255, 255)
INK = (20, 20, 24, 255)
MASK_COLOUR = (255, 120, 0, 120)
GRID_COLOUR = (150, 150, 160, 90)


def palette_lut(colours) -> np.ndarray:
    """A 256-entry RGBA table starting with `colours`, for uint8 codes shown at levels 0..255."""
    lut = np.zeros((256, 4), np.uint8)
    lut[: len(colours)] = colours
    return lut


def make_image_item(lut: np.ndarray) -> pg.ImageItem:
    # row-major: pixel (i, j) covers x in [j, j+1], y in [i, i+1]
    item = pg.ImageItem(axisOrder="row-major")
    item.setLookupTable(lut)
    item.setLevels((0, 255))
    return item


def grid_path(side: int) -> QtGui.QPainterPath:
    path = QtGui.QPainterPath()
    for k in range(side + 1):
        path.moveTo(k, 0)
        path.lineTo(k, side)
        path.moveTo(0, k)
        path.lineTo(side, k)
    return path


def digit_view(side: int) -> pg.ViewBox:
    """A fixed, square view of one digit: no pan, zoom or context menu, row 0 on top."""
    view = pg.ViewBox(lockAspect=True, invertY=True, enableMouse=False, enableMenu=False)
    view.setRange(xRange=(0, side), yRange=(0, side), padding=0.01)
    return view


class DigitCanvas(pg.GraphicsView):
    """Edits a Drawing with the mouse; emits sigChanged after every edit.

    Left button applies the tool; right button the opposite (pen erases,
    mask brush and rectangle unmask).
    """

    sigChanged = Signal()
    sigHovered = Signal(int, int)  # pixel under the mouse, (-1, -1) outside

    def __init__(self, drawing: Drawing | None = None, parent=None):
        super().__init__(parent)
        self.drawing = drawing or Drawing()
        self.tool = "pen"
        self.brush_size = 1
        self._stroke_button = None
        self._last_position = None
        self._rect_start = None
        self._hover = (0.0, 0.0)

        # create
        side = self.drawing.side
        self.view = digit_view(side)
        self.image_item = make_image_item(palette_lut([PAPER, INK]))
        self.mask_item = make_image_item(palette_lut([(0, 0, 0, 0), MASK_COLOUR]))
        self.grid_item = QtWidgets.QGraphicsPathItem(grid_path(side))
        self.grid_item.setPen(pg.mkPen(GRID_COLOUR, width=1, cosmetic=True))
        self.border_item = QtWidgets.QGraphicsRectItem(0, 0, side, side)
        self.border_item.setPen(pg.mkPen((90, 90, 100), width=1, cosmetic=True))
        self.brush_item = QtWidgets.QGraphicsEllipseItem()
        self.brush_item.setPen(pg.mkPen((0, 150, 255), width=1.5, cosmetic=True))
        self.rect_item = QtWidgets.QGraphicsRectItem()
        self.rect_item.setPen(pg.mkPen(MASK_COLOUR[:3], width=2, style=Qt.DashLine, cosmetic=True))

        # layout
        self.setCentralItem(self.view)
        for z, item in enumerate(
            (self.image_item, self.mask_item, self.grid_item, self.border_item)
        ):
            item.setZValue(z)
            self.view.addItem(item)
        for item in (self.brush_item, self.rect_item):
            item.setZValue(10)
            item.hide()
            self.view.addItem(item)
        self.setBackground(self.palette().color(QtGui.QPalette.Window))
        self.setMinimumSize(280, 280)
        self.setMouseTracking(True)
        self.setCursor(Qt.CrossCursor)
        self.setToolTip(
            "Left button: apply the tool. Right button: the opposite "
            "(erase with the pen, unmask with the mask tools)."
        )

        # initial update
        self.refresh()

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(560, 560)

    # public

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; one of {TOOLS}")
        self.tool = tool
        self._update_brush_outline()

    def set_brush_size(self, size: int) -> None:
        self.brush_size = max(1, int(size))
        self._update_brush_outline()

    def set_grid_visible(self, visible: bool) -> None:
        self.grid_item.setVisible(visible)

    def refresh(self) -> None:
        """Shows the drawing's current pixels; call after changing it from outside."""
        self.image_item.setImage(self.drawing.image, autoLevels=False)
        self.mask_item.setImage(self.drawing.unknown.astype(np.uint8), autoLevels=False)

    def pixel_to_widget(self, i: int, j: int) -> QtCore.QPoint:
        """Widget coordinates of the centre of pixel (i, j)."""
        scene = self.image_item.mapToScene(QtCore.QPointF(j + 0.5, i + 0.5))
        return self.mapFromScene(scene)

    def widget_to_position(self, point: QtCore.QPointF) -> tuple[float, float]:
        """(row, column) in pixel units of a widget position; may lie outside the digit."""
        item = self.image_item.mapFromScene(self.mapToScene(point.toPoint()))
        return item.y(), item.x()

    # mouse

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() not in (Qt.LeftButton, Qt.RightButton) or self._stroke_button:
            event.ignore()
            return
        self._stroke_button = event.button()
        y, x = self.widget_to_position(event.position())
        if self.tool == "mask_rect":
            self._rect_start = (y, x)
            self._update_rect_preview(y, x)
        else:
            self.drawing.begin_stroke()
            self._last_position = (y, x)
            self._paint_at(y, x)
        event.accept()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        y, x = self.widget_to_position(event.position())
        self._update_hover(y, x)
        if self._stroke_button is None:
            return
        if self.tool == "mask_rect":
            self._update_rect_preview(y, x)
        else:
            # interpolate so a quick stroke leaves no gaps between mouse events
            changed = False
            for py, px in segment_points(*self._last_position, y, x):
                changed |= self._paint_at(py, px, emit=False)
            self._last_position = (y, x)
            if changed:
                self.refresh()
                self.sigChanged.emit()
        event.accept()

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() != self._stroke_button:
            event.ignore()
            return
        y, x = self.widget_to_position(event.position())
        if self.tool == "mask_rect" and self._rect_start is not None:
            (y0, x0), side = self._rect_start, self.drawing.side
            self.rect_item.hide()
            self._rect_start = None
            corners = np.clip(np.floor([y0, x0, y, x]), -1, side).astype(int)
            self.drawing.mask_rectangle(*corners, unmask=event.button() == Qt.RightButton)
            self.refresh()
            self.sigChanged.emit()
        else:
            self.drawing.end_stroke()
        self._stroke_button = None
        self._last_position = None
        event.accept()

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:
        # the view is fixed; swallow the wheel so it neither zooms nor scrolls
        event.accept()

    def leaveEvent(self, event: QtCore.QEvent) -> None:
        self.brush_item.hide()
        self.sigHovered.emit(-1, -1)
        super().leaveEvent(event)

    # helpers

    def _paint_at(self, y: float, x: float, emit: bool = True) -> bool:
        erase = self._stroke_button == Qt.RightButton
        changed = self.drawing.paint(y, x, self.tool, self.brush_size, erase=erase)
        if changed and emit:
            self.refresh()
            self.sigChanged.emit()
        return changed

    def _update_hover(self, y: float, x: float) -> None:
        side = self.drawing.side
        inside = 0 <= y < side and 0 <= x < side
        self.sigHovered.emit(int(y) if inside else -1, int(x) if inside else -1)
        self._hover = (y, x)
        self._update_brush_outline()
        self.brush_item.setVisible(inside and self.tool != "mask_rect")

    def _update_brush_outline(self) -> None:
        y, x = self._hover
        radius = max(self.brush_size, 1) / 2
        self.brush_item.setRect(x - radius, y - radius, 2 * radius, 2 * radius)

    def _update_rect_preview(self, y: float, x: float) -> None:
        side = self.drawing.side
        y0, x0 = self._rect_start
        top, bottom = sorted((np.floor(y0), np.floor(y)))
        left, right = sorted((np.floor(x0), np.floor(x)))
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, side - 1), min(right, side - 1)
        self.rect_item.setRect(left, top, right - left + 1, bottom - top + 1)
        self.rect_item.show()
