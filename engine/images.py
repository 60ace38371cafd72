"""Pictures in and out: any PNG or JPEG to a 28x28 binary digit, and back to files.

Loading mimics how MNIST was made: light-on-dark ink, the digit fitted into a
20x20 box with its aspect kept, centred by mass in 28x28, then thresholded.
Saving writes ink white on black (as MNIST shows it), grids and animated GIFs.
"""

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

SIDE = 28
FIT = 20  # MNIST fits each digit into a 20x20 box inside the 28x28 frame
MAX_PIXELS = 50_000_000
# Pillow warns above this many pixels and refuses above twice it; this module
# refuses anything above it itself, before decoding
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# pixel modes that convert to gray meaningfully; others (LAB, HSV, premultiplied
# alpha) are refused rather than guessed at
GRAY_MODES = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"}
ALPHA_MODES = {"LA", "PA", "RGBA"}
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def open_picture(path: str | os.PathLike) -> Image.Image:
    """Opens and decodes a picture file, turning every failure into PixelCNNError."""
    path = Path(path)
    if not path.is_file():
        raise PixelCNNError(f"image {path} does not exist; pass the path of a PNG or JPEG file.")
    if path.stat().st_size == 0:
        raise PixelCNNError(f"image {path} is empty (0 bytes); save the picture again.")

    try:
        picture = Image.open(path)
    except Image.DecompressionBombError as error:
        raise too_large(path, None) from error
    except UnidentifiedImageError as error:
        raise PixelCNNError(
            f"{path} is not an image that can be read; use a PNG or JPEG file."
        ) from error
    except OSError as error:
        raise PixelCNNError(f"could not read image {path}: {error}") from error

    # the header gives the size; refuse before decoding anything huge
    width, height = picture.size
    if width * height > MAX_PIXELS:
        picture.close()
        raise too_large(path, picture.size)
    if width == 0 or height == 0:
        raise PixelCNNError(f"image {path} has no pixels ({width}x{height}).")

    try:
        picture.load()
        # phone cameras store the rotation separately from the pixels
        picture = ImageOps.exif_transpose(picture)
    except (OSError, SyntaxError, ValueError) as error:
        raise PixelCNNError(
            f"image {path} could not be decoded (truncated or damaged: {error}); "
            "save it again as a PNG."
        ) from error
    return picture


def too_large(path: Path, size) -> PixelCNNError:
    stated = f" ({size[0]}x{size[1]})" if size else ""
    return PixelCNNError(
        f"image {path}{stated} has more than {MAX_PIXELS // 1_000_000} megapixels; "
        "scale it down before loading it."
    )


def to_gray(picture: Image.Image, source: str) -> np.ndarray:
    """float32 [h,w] in [0,1]; transparent areas become the contrast of the opaque ones."""
    mode = picture.mode
    if picture.mode == "P" and "transparency" in picture.info:
        mode = "PA"

    if mode in WIDE_MODES:
        values = np.asarray(picture, dtype=np.float64)
        if mode.startswith("I;16"):
            return (values / 65535.0).astype(np.float32)
        # 32-bit integers and floats have no fixed range: stretch to [0, 1]
        low, high = values.min(), values.max()
        stretched = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return stretched.astype(np.float32)
    if mode in GRAY_MODES:
        return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    if mode not in ALPHA_MODES:
        raise PixelCNNError(
            f"image {source} has pixel mode '{picture.mode}', which cannot be read as "
            "a digit; save it as an 8-bit grayscale or RGB PNG."
        )

    rgba = picture.convert("RGBA")
    gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    if alpha.sum() == 0:
        return np.zeros_like(gray)

    # a drawing on a transparent sheet: put dark strokes on white, light on black
    ink_brightness = float((gray * alpha).sum() / alpha.sum())
    background = 1.0 if ink_brightness < 0.5 else 0.0
    return gray * alpha + background * (1.0 - alpha)


def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Any readable picture as float32 [h,w] in [0,1], 1 = white."""
    picture = open_picture(path)
    try:
        return to_gray(picture, str(path))
    finally:
        picture.close()


def resize_gray(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-averaging resize of a float image to (height, width)."""
    height, width = shape
    picture = Image.fromarray(gray.astype(np.float32))
    resized = picture.resize((width, height), Image.Resampling.BOX)
    return np.asarray(resized, dtype=np.float32)


def light_background(gray: np.ndarray) -> bool:
    """True when the border of the picture is mostly light: dark ink on paper."""
    border = np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))
    return float(np.median(border)) > 0.5


def fit_digit(ink: np.ndarray) -> np.ndarray:
    """Crops to the ink, fits it into 20x20 keeping its aspect, centres it by mass in 28x28."""
    rows = np.flatnonzero((ink > 0.5).any(axis=1))
    columns = np.flatnonzero((ink > 0.5).any(axis=0))
    if len(rows) == 0:
        # nothing brighter than half: a blank page stays blank
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    crop = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]

    h, w = crop.shape
    factor = FIT / max(h, w)
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    digit = resize_gray(crop, size)

    # MNIST centres the centre of mass; keep the whole box inside the frame
    mass = digit.sum()
    centre_y = (digit.sum(axis=1) @ np.arange(size[0])) / mass if mass else size[0] / 2
    centre_x = (digit.sum(axis=0) @ np.arange(size[1])) / mass if mass else size[1] / 2
    top = int(np.clip(round(SIDE / 2 - 0.5 - centre_y), 0, SIDE - size[0]))
    left = int(np.clip(round(SIDE / 2 - 0.5 - centre_x), 0, SIDE - size[1]))
    framed = np.zeros((SIDE, SIDE), dtype=np.float32)
    framed[top : top + size[0], left : left + size[1]] = digit
    return framed


def load_digit(path: str | os.PathLike) -> np.ndarray:
    """A picture file as a binary digit, uint8 [28,28] of 0/1 with 1 = ink.

    A 28x28 picture is only thresholded (so saved digits load back as they
    were); any other size is cropped to its ink and fitted like MNIST.
    Light backgrounds are inverted first. Raises PixelCNNError for a missing,
    empty, huge, undecodable or odd-mode file.
    """
    gray = read_grayscale(path)
    ink = 1.0 - gray if light_background(gray) else gray

    if ink.shape != (SIDE, SIDE):
        ink = fit_digit(ink)

    # thin strokes of a large picture average to less than half: scale the cut
    brightest = float(ink.max())
    if brightest == 0.0:
        log.info("image %s holds no ink; it loads as a blank digit", path)
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    return (ink > 0.5 * min(brightest, 1.0)).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0/1 or bool -> 0/255; floats in [0,1] -> 0..255 with NaN as 0; other integers kept."""
    image = np.asarray(image)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        scaled = np.nan_to_num(image.astype(np.float64), nan=0.0)
        return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    if image.size and image.max() <= 1:
        return image.astype(np.uint8) * 255
    return np.clip(image, 0, 255).astype(np.uint8)


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement: each pixel becomes a scale x scale block."""
    if scale < 1:
        raise PixelCNNError(f"the scale must be at least 1, got {scale}.")
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def grid_image(
    images: np.ndarray, columns: int | None = None, scale: int = 1, gap: int = 1, gap_value=128
) -> np.ndarray:
    """Tiles [N,H,W] images into one uint8 picture, row by row, with gray gaps."""
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise PixelCNNError(f"a grid needs images shaped [N,H,W] with N >= 1, got {images.shape}.")
    if gap < 0:
        raise PixelCNNError(f"the gap must be 0 or more pixels, got {gap}.")
    N = len(images)
    columns = columns or int(np.ceil(np.sqrt(N)))
    if columns < 1:
        raise PixelCNNError(f"a grid needs at least one column, got {columns}.")
    rows = int(np.ceil(N / columns))

    tiles = [upscale(to_uint8(image), scale) for image in images]
    th, tw = tiles[0].shape
    grid = np.full(
        (rows * th + (rows - 1) * gap, columns * tw + (columns - 1) * gap),
        gap_value,
        dtype=np.uint8,
    )
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        grid[r * (th + gap) : r * (th + gap) + th, c * (tw + gap) : c * (tw + gap) + tw] = tile
    return grid


def write_picture(picture: Image.Image, path: str | os.PathLike, **options) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, **options)
    except OSError as error:
        raise PixelCNNError(
            f"could not write {path} ({error}); choose another file or folder."
        ) from error
    return path


def save_png(image: np.ndarray, path: str | os.PathLike, scale: int = 1) -> Path:
    """One image [H,W] (0/1, bool, floats in [0,1] or uint8) as a grayscale PNG."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise PixelCNNError(f"save_png takes one [H,W] image, got shape {image.shape}.")
    picture = Image.fromarray(upscale(to_uint8(image), scale))
    return write_picture(picture, path, format="PNG")


def save_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    columns: int | None = None,
    scale: int = 4,
    gap: int = 2,
) -> Path:
    """Images [N,H,W] as one PNG grid, `columns` wide (default: about square)."""
    grid = grid_image(images, columns=columns, scale=scale, gap=gap)
    return write_picture(Image.fromarray(grid), path, format="PNG")


def save_gif(
    frames, path: str | os.PathLike, scale: int = 4, duration_ms: int = 40, loop: int = 0
) -> Path:
    """An animated GIF from a list of same-shaped [H,W] frames (see grid_image for many).

    loop=0 repeats forever; duration_ms is the time each frame shows.
    """
    frames = [upscale(to_uint8(frame), scale) for frame in frames]
    if not frames:
        raise PixelCNNError(f"an animation needs at least one frame; none were given for {path}.")
    if any(frame.ndim != 2 or frame.shape != frames[0].shape for frame in frames):
        raise PixelCNNError("every frame of an animation must be one image of the same shape.")
    pictures = [Image.fromarray(frame) for frame in frames]
    return write_picture(
        pictures[0],
        path,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=duration_ms,
        loop=loop,
    )
