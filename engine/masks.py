"""Named masks for completion, shared by the command line and the GUI.

Every mask here is an UNKNOWN mask: bool [H,W], True where a pixel is hidden
and will be filled. `complete` takes the opposite, the known mask: pass
`~mask`. A mask PNG follows the same rule: white = unknown.
"""

import os

import numpy as np

from engine.errors import PixelCNNError
from engine.images import read_grayscale, resize_gray

SHAPE = (28, 28)
NAMES = ("bottom", "right", "centre", "random")


def bottom_half(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Rows from the middle down are unknown (rows 14-27 of a 28x28 image)."""
    H, W = shape
    unknown = np.zeros(shape, dtype=bool)
    unknown[H // 2 :] = True
    return unknown


def right_half(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Columns from the middle rightwards are unknown (14-27 of 28)."""
    H, W = shape
    unknown = np.zeros(shape, dtype=bool)
    unknown[:, W // 2 :] = True
    return unknown


def centre_square(shape: tuple[int, int] = SHAPE, side: int | None = None) -> np.ndarray:
    """A centred square is unknown: side H/2 by default (rows and columns 7-20 of 28)."""
    H, W = shape
    side = min(H, W) // 2 if side is None else side
    if not 1 <= side <= min(H, W):
        raise PixelCNNError(f"the centre square's side must be 1 to {min(H, W)}, got {side}.")
    top, left = (H - side) // 2, (W - side) // 2
    unknown = np.zeros(shape, dtype=bool)
    unknown[top : top + side, left : left + side] = True
    return unknown


def random_pixels(
    fraction: float = 0.5, seed: int = 0, shape: tuple[int, int] = SHAPE
) -> np.ndarray:
    """Exactly round(fraction * H*W) pixels, chosen at random from `seed`, are unknown."""
    if not 0.0 <= fraction <= 1.0:
        raise PixelCNNError(f"the fraction of unknown pixels must be in [0, 1], got {fraction}.")
    H, W = shape
    count = round(fraction * H * W)
    chosen = np.random.default_rng(seed).permutation(H * W)[:count]
    unknown = np.zeros(H * W, dtype=bool)
    unknown[chosen] = True
    return unknown.reshape(shape)


def named_mask(
    name: str, shape: tuple[int, int] = SHAPE, fraction: float = 0.5, seed: int = 0
) -> np.ndarray:
    """The unknown mask called `name` (one of NAMES); fraction and seed are for 'random'."""
    if name == "bottom":
        return bottom_half(shape)
    if name == "right":
        return right_half(shape)
    if name == "centre":
        return centre_square(shape)
    if name == "random":
        return random_pixels(fraction, seed, shape)
    raise PixelCNNError(f"mask '{name}' is unknown; use one of {NAMES} or a mask PNG.")


def load_mask(path: str | os.PathLike, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """An unknown mask from a picture: white (bright) pixels are unknown.

    The picture is resized to `shape` as it is, without cropping or
    inverting, so a mask drawn over a 28x28 digit lines up with it.
    """
    gray = read_grayscale(path)
    if gray.shape != shape:
        gray = resize_gray(gray, shape)
    return gray > 0.5
