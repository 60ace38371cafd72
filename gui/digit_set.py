"""The few hundred MNIST test digits shipped in assets/, for trying the studio at once.

Built by tools/make_digits.py; the authors and licence are in
assets/DIGITS-LICENSE.md.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "digits.npz"
INK_THRESHOLD = 127


@dataclass
class DigitSet:
    images: np.ndarray  # [N,28,28] uint8 grey levels
    labels: np.ndarray  # [N] uint8
    test_indices: np.ndarray  # [N] position of each digit in the MNIST test set

    def __len__(self) -> int:
        return len(self.images)

    def binary(self, k: int) -> np.ndarray:
        """Digit k as uint8 0/1, ink where the grey level is above the threshold."""
        return (self.images[k] > INK_THRESHOLD).astype(np.uint8)

    def describe(self, k: int) -> str:
        return f"MNIST test digit #{int(self.test_indices[k])}, a {int(self.labels[k])}"


def load_digit_set(path: str | os.PathLike = DEFAULT_PATH) -> DigitSet:
    path = Path(path)
    try:
        with np.load(path) as data:
            images, labels, indices = data["images"], data["labels"], data["test_indices"]
    except FileNotFoundError as error:
        raise PixelCNNError(
            f"the digit set {path} is missing; rebuild it with 'python tools/make_digits.py'."
        ) from error
    except (OSError, KeyError, ValueError) as error:
        raise PixelCNNError(
            f"the digit set {path} is damaged ({error}); rebuild it with "
            "'python tools/make_digits.py'."
        ) from error
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise PixelCNNError(f"the digit set {path} holds {images.shape}, not 28x28 digits.")
    return DigitSet(images, labels, indices)
