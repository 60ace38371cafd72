"""The drawing being edited: a binary digit, a mask of unknown pixels, and their history.

Qt-free, so the canvas widget only turns mouse positions into calls here and
tests can check every edit without a screen.
"""

import numpy as np

SIDE = 28
HISTORY_LIMIT = 200

TOOLS = ("pen", "eraser", "mask_brush", "mask_rect")


def brush_footprint(y: float, x: float, size: int, side: int = SIDE) -> tuple[np.ndarray, ...]:
    """Row and column indices of the pixels a round brush of `size` covers at (y, x).

    (y, x) is a position in pixel units (pixel (i, j) spans [i, i+1) x [j, j+1));
    a pixel is covered when its centre lies within size/2 of the position, and
    the pixel under the position always is, so size 1 paints exactly one pixel.
    """
    rows, cols = np.mgrid[0:side, 0:side]
    distance_sq = (rows + 0.5 - y) ** 2 + (cols + 0.5 - x) ** 2
    covered = distance_sq < (size / 2) ** 2
    i, j = int(np.floor(y)), int(np.floor(x))
    if 0 <= i < side and 0 <= j < side:
        covered[i, j] = True
    return np.nonzero(covered)


def segment_points(y0: float, x0: float, y1: float, x1: float) -> list[tuple[float, float]]:
    """Positions along a mouse move, at most half a pixel apart, so fast strokes have no gaps."""
    length = max(abs(y1 - y0), abs(x1 - x0))
    count = max(1, int(np.ceil(length * 2)))
    return [(y0 + (y1 - y0) * t / count, x0 + (x1 - x0) * t / count) for t in range(1, count + 1)]


class Drawing:
    """`image` holds ink (1) and paper (0); `unknown` is True where the network should fill in.

    Every edit that a person sees as one action (a stroke, a rectangle, a
    preset, clear, invert) is one undo step.
    """

    def __init__(self, side: int = SIDE):
        self.side = side
        self.image = np.zeros((side, side), np.uint8)
        self.unknown = np.zeros((side, side), bool)
        self._undo: list[tuple[np.ndarray, np.ndarray]] = []
        self._redo: list[tuple[np.ndarray, np.ndarray]] = []
        self._stroke_open = False

    # history

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.image.copy(), self.unknown.copy()

    def _push_undo(self) -> None:
        self._undo.append(self._snapshot())
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._snapshot())
        self.image, self.unknown = self._undo.pop()
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._snapshot())
        self.image, self.unknown = self._redo.pop()
        return True

    # strokes: begin once, paint at each mouse position, end on release

    def begin_stroke(self) -> None:
        self._push_undo()
        self._stroke_open = True

    def paint(self, y: float, x: float, tool: str, size: int, erase: bool = False) -> bool:
        """Applies a brush tool at one position; True when a pixel changed.

        `erase` is the secondary action (right button): the pen erases, the
        eraser draws, the mask brush clears the mask.
        """
        if tool not in ("pen", "eraser", "mask_brush"):
            raise ValueError(f"{tool!r} is not a brush tool")
        rows, cols = brush_footprint(y, x, size, self.side)
        if tool == "mask_brush":
            target, value = self.unknown, not erase
        else:
            target, value = self.image, int((tool == "pen") != erase)
        before = target[rows, cols].copy()
        target[rows, cols] = value
        return bool(np.any(before != target[rows, cols]))

    def end_stroke(self) -> None:
        # a stroke that changed nothing leaves no undo step behind
        if self._stroke_open and self._undo:
            image, unknown = self._undo[-1]
            if np.array_equal(image, self.image) and np.array_equal(unknown, self.unknown):
                self._undo.pop()
        self._stroke_open = False

    # whole-drawing edits, one undo step each

    def mask_rectangle(self, top: int, left: int, bottom: int, right: int, unmask=False) -> None:
        """Marks the pixels of rows top..bottom and columns left..right (inclusive) unknown."""
        top, bottom = sorted((int(top), int(bottom)))
        left, right = sorted((int(left), int(right)))
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, self.side - 1), min(right, self.side - 1)
        if top > bottom or left > right:
            return
        self._push_undo()
        self.unknown[top : bottom + 1, left : right + 1] = not unmask

    def set_mask(self, unknown: np.ndarray) -> None:
        self._push_undo()
        self.unknown = np.asarray(unknown, bool).copy()

    def set_image(self, image: np.ndarray, keep_mask: bool = False) -> None:
        image = np.asarray(image)
        if image.shape != (self.side, self.side):
            raise ValueError(f"expected a {self.side}x{self.side} image, got {image.shape}")
        self._push_undo()
        self.image = (image > 0).astype(np.uint8)
        if not keep_mask:
            self.unknown = np.zeros_like(self.unknown)

    def clear(self) -> None:
        self._push_undo()
        self.image = np.zeros_like(self.image)
        self.unknown = np.zeros_like(self.unknown)

    def clear_mask(self) -> None:
        self._push_undo()
        self.unknown = np.zeros_like(self.unknown)

    def invert(self) -> None:
        self._push_undo()
        self.image = 1 - self.image
