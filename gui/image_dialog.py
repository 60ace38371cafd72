"""Preview of a picture file before it replaces the drawing: the original and its 28x28 digit.

The conversion (crop to the ink, fit into 20x20 like MNIST, binarize) is
engine.images.load_digit; this dialog only shows what it made.
"""

import numpy as np
import pyqtgraph as pg
from PySide6 import QtGui, QtWidgets
from PySide6.QtCore import Qt

from gui.canvas import INK, PAPER, digit_view, make_image_item, palette_lut

PREVIEW_SIZE = 224


class ImagePreviewDialog(QtWidgets.QDialog):
    """Shows `path` beside `digit` (uint8 0/1 [28,28]); Accept takes the digit."""

    def __init__(self, path, digit: np.ndarray, parent=None):
        super().__init__(parent)
        self.digit = digit

        # create
        self.setWindowTitle("Open image")
        original = QtWidgets.QLabel()
        pixmap = QtGui.QPixmap(str(path))
        if not pixmap.isNull():
            pixmap = pixmap.scaled(
                PREVIEW_SIZE, PREVIEW_SIZE, Qt.KeepAspectRatio, Qt.SmoothTransformation
            )
            original.setPixmap(pixmap)
        else:
            original.setText("(Qt cannot show this file,\nbut it was converted)")
        original.setAlignment(Qt.AlignCenter)
        original.setFixedSize(PREVIEW_SIZE, PREVIEW_SIZE)
        self.digit_view = pg.GraphicsView()
        view = digit_view(digit.shape[0])
        item = make_image_item(palette_lut([PAPER, INK]))
        item.setImage(digit, autoLevels=False)
        self.digit_view.setCentralItem(view)
        view.addItem(item)
        self.digit_view.setFixedSize(PREVIEW_SIZE, PREVIEW_SIZE)
        self.digit_view.setBackground(self.palette().color(QtGui.QPalette.Window))
        note = QtWidgets.QLabel(
            f"{path}\n{int(digit.sum())} ink pixels after fitting into 28x28 and binarizing."
        )
        note.setWordWrap(True)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel
        )
        buttons.button(QtWidgets.QDialogButtonBox.Ok).setText("Use this digit")

        # layout
        pictures = QtWidgets.QGridLayout()
        pictures.addWidget(QtWidgets.QLabel("Picture"), 0, 0, Qt.AlignCenter)
        pictures.addWidget(QtWidgets.QLabel("Digit (28x28)"), 0, 1, Qt.AlignCenter)
        pictures.addWidget(original, 1, 0)
        pictures.addWidget(self.digit_view, 1, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(pictures)
        layout.addWidget(note)
        layout.addWidget(buttons)

        # connect
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
