"""The drawing canvas: mouse strokes, brushes, masks, undo and redo.

Mouse events go through Qt (pytest-qt on the offscreen platform), so these
check the whole path from a widget position to the pixels it changes.
"""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui.canvas import DigitCanvas
from gui.drawing import Drawing, brush_footprint, segment_points


@pytest.fixture
def canvas(qtbot):
    widget = DigitCanvas()
    qtbot.addWidget(widget)
    widget.resize(560, 560)
    widget.show()
    qtbot.waitExposed(widget)
    # pyqtgraph lays the view out on the first events after showing
    qtbot.waitUntil(lambda: widget.pixel_to_widget(27, 27).x() > 400)
    return widget


def stroke(qtbot, canvas, pixels, button=Qt.LeftButton):
    """Presses at the first pixel's centre, moves through the others, releases at the last."""
    viewport = canvas.viewport()
    points = [canvas.pixel_to_widget(i, j) for i, j in pixels]
    qtbot.mousePress(viewport, button, pos=points[0])
    for point in points[1:]:
        qtbot.mouseMove(viewport, point)
    qtbot.mouseRelease(viewport, button, pos=points[-1])


def ink_pixels(drawing: Drawing) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(drawing.image), strict=True)}


def test_pen_stroke_inks_exactly_the_pixels_it_crosses(qtbot, canvas):
    # one quick move from column 4 to 15 must leave no gaps
    with qtbot.waitSignal(canvas.sigChanged):
        stroke(qtbot, canvas, [(5, 4), (5, 15)])

    assert ink_pixels(canvas.drawing) == {(5, j) for j in range(4, 16)}
    assert not canvas.drawing.unknown.any()


def test_diagonal_stroke_is_connected(qtbot, canvas):
    stroke(qtbot, canvas, [(2, 2), (20, 20)])

    inked = ink_pixels(canvas.drawing)
    assert {(k, k) for k in range(2, 21)} <= inked
    assert all(abs(i - j) <= 1 for i, j in inked)


def test_right_button_erases_with_the_pen(qtbot, canvas):
    stroke(qtbot, canvas, [(10, 3), (10, 12)])
    stroke(qtbot, canvas, [(10, 6), (10, 8)], button=Qt.RightButton)

    assert ink_pixels(canvas.drawing) == {(10, j) for j in (3, 4, 5, 9, 10, 11, 12)}


def test_eraser_removes_ink(qtbot, canvas):
    canvas.drawing.set_image(np.ones((28, 28), np.uint8))
    canvas.set_tool("eraser")
    stroke(qtbot, canvas, [(0, 0), (0, 27)])

    assert canvas.drawing.image[0].sum() == 0
    assert canvas.drawing.image[1:].all()


def test_brush_size_three_paints_a_three_by_three_block(qtbot, canvas):
    canvas.set_brush_size(3)
    stroke(qtbot, canvas, [(14, 14)])

    assert ink_pixels(canvas.drawing) == {(i, j) for i in (13, 14, 15) for j in (13, 14, 15)}


def test_mask_brush_marks_pixels_unknown_and_keeps_the_ink(qtbot, canvas):
    canvas.drawing.set_image(np.eye(28, dtype=np.uint8))
    canvas.set_tool("mask_brush")
    stroke(qtbot, canvas, [(3, 0), (3, 9)])

    expected = np.zeros((28, 28), bool)
    expected[3, :10] = True
    np.testing.assert_array_equal(canvas.drawing.unknown, expected)
    np.testing.assert_array_equal(canvas.drawing.image, np.eye(28, dtype=np.uint8))
    # the overlay shows the mask
    np.testing.assert_array_equal(canvas.mask_item.image, expected.astype(np.uint8))


def test_mask_rectangle_marks_the_dragged_rectangle(qtbot, canvas):
    canvas.set_tool("mask_rect")
    stroke(qtbot, canvas, [(20, 4), (12, 9), (8, 10)])

    expected = np.zeros((28, 28), bool)
    expected[8:21, 4:11] = True
    np.testing.assert_array_equal(canvas.drawing.unknown, expected)
    assert not canvas.rect_item.isVisible()


def test_right_dragged_rectangle_unmasks(qtbot, canvas):
    canvas.drawing.set_mask(np.ones((28, 28), bool))
    canvas.set_tool("mask_rect")
    stroke(qtbot, canvas, [(0, 0), (27, 13)], button=Qt.RightButton)

    assert not canvas.drawing.unknown[:, :14].any()
    assert canvas.drawing.unknown[:, 14:].all()


def test_a_stroke_is_one_undo_step_and_redo_brings_it_back(qtbot, canvas):
    stroke(qtbot, canvas, [(5, 5), (5, 10)])
    stroke(qtbot, canvas, [(9, 5), (9, 10)])
    after_two = canvas.drawing.image.copy()

    assert canvas.drawing.undo()
    assert ink_pixels(canvas.drawing) == {(5, j) for j in range(5, 11)}
    assert canvas.drawing.undo()
    assert not canvas.drawing.image.any()
    assert not canvas.drawing.undo()

    assert canvas.drawing.redo() and canvas.drawing.redo()
    np.testing.assert_array_equal(canvas.drawing.image, after_two)
    assert not canvas.drawing.redo()


def test_a_new_edit_drops_the_redo_history():
    drawing = Drawing()
    drawing.begin_stroke()
    drawing.paint(3.5, 3.5, "pen", 1)
    drawing.end_stroke()
    drawing.undo()
    drawing.invert()

    assert not drawing.can_redo()
    assert drawing.image.all()


def test_a_stroke_that_changes_nothing_leaves_no_undo_step():
    drawing = Drawing()
    drawing.begin_stroke()
    drawing.paint(3.5, 3.5, "eraser", 2)
    drawing.end_stroke()

    assert not drawing.can_undo()


def test_undo_restores_the_mask_too():
    drawing = Drawing()
    drawing.mask_rectangle(14, 0, 27, 27)
    drawing.clear()

    drawing.undo()
    assert drawing.unknown[14:].all() and not drawing.unknown[:14].any()


def test_brush_footprint_outside_the_image_is_empty():
    rows, cols = brush_footprint(-5.0, 40.0, 3)
    assert len(rows) == len(cols) == 0


def test_segment_points_are_at_most_half_a_pixel_apart():
    points = [(0.5, 0.5)] + segment_points(0.5, 0.5, 7.0, 20.0)
    steps = np.diff(np.array(points), axis=0)
    assert np.abs(steps).max() <= 0.5
    assert points[-1] == (7.0, 20.0)


def test_grid_toggles(canvas):
    canvas.set_grid_visible(False)
    assert not canvas.grid_item.isVisible()
    canvas.set_grid_visible(True)
    assert canvas.grid_item.isVisible()
