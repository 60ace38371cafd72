"""Named unknown masks, and pictures in and out: import of any picture, PNG grids, GIFs.

Every picture is made here, in tmp_path; huge ones only claim their size in
a PNG header, so nothing large is ever decoded.
"""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from engine.errors import PixelCNNError
from engine.images import grid_image, load_digit, save_gif, save_grid, save_png
from engine.masks import (
    bottom_half,
    centre_square,
    load_mask,
    named_mask,
    random_pixels,
    right_half,
)


def test_bottom_half_hides_rows_14_to_27():
    unknown = bottom_half()
    assert unknown.shape == (28, 28) and unknown.dtype == bool
    assert unknown[14:].all() and not unknown[:14].any()


def test_right_half_hides_columns_14_to_27():
    unknown = right_half()
    assert unknown[:, 14:].all() and not unknown[:, :14].any()


def test_centre_square_hides_rows_and_columns_7_to_20():
    unknown = centre_square()
    assert unknown[7:21, 7:21].all() and unknown.sum() == 14 * 14


def test_random_pixels_hide_the_fraction_asked_and_repeat_by_seed():
    unknown = random_pixels(0.25, seed=3)
    assert unknown.sum() == 196
    np.testing.assert_array_equal(unknown, random_pixels(0.25, seed=3))
    assert not np.array_equal(unknown, random_pixels(0.25, seed=4))


def test_named_masks_match_their_functions():
    np.testing.assert_array_equal(named_mask("bottom"), bottom_half())
    np.testing.assert_array_equal(
        named_mask("random", fraction=0.1, seed=2), random_pixels(0.1, 2)
    )


@pytest.mark.parametrize("call", [lambda: named_mask("top"), lambda: random_pixels(1.5)])
def test_bad_mask_requests_raise(call):
    with pytest.raises(PixelCNNError):
        call()


def test_mask_png_white_means_unknown(tmp_path):
    unknown = np.zeros((28, 28), dtype=bool)
    unknown[5:9, 3:20] = True
    save_png(unknown, tmp_path / "mask.png", scale=3)
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.png"), unknown)


def a_digit() -> np.ndarray:
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 1
    digit[6:9, 9:16] = 1
    return digit


def test_saved_digit_loads_back_unchanged(tmp_path):
    digit = a_digit()
    save_png(digit, tmp_path / "digit.png")
    np.testing.assert_array_equal(load_digit(tmp_path / "digit.png"), digit)


def test_dark_ink_on_a_light_background_is_inverted(tmp_path):
    digit = a_digit()
    Image.fromarray((1 - digit) * 255).save(tmp_path / "paper.png")
    np.testing.assert_array_equal(load_digit(tmp_path / "paper.png"), digit)


def test_large_jpeg_is_fitted_like_mnist(tmp_path):
    # a dark bar 300 tall and 60 wide on white paper, off centre
    page = np.full((400, 500), 255, dtype=np.uint8)
    page[40:340, 300:360] = 0
    Image.fromarray(page).convert("RGB").save(tmp_path / "photo.jpg", quality=90)

    digit = load_digit(tmp_path / "photo.jpg")
    rows = np.flatnonzero(digit.any(axis=1))
    columns = np.flatnonzero(digit.any(axis=0))
    assert digit.dtype == np.uint8 and set(np.unique(digit)) == {0, 1}
    assert rows[-1] - rows[0] + 1 == 20  # the long side fills the 20-pixel box
    assert abs(columns[-1] - columns[0] + 1 - 4) <= 1  # aspect 5:1 kept, give or take JPEG
    assert (
        abs((rows[0] + rows[-1]) / 2 - 13.5) <= 1
        and abs((columns[0] + columns[-1]) / 2 - 13.5) <= 1
    )


def test_transparent_background_is_treated_as_paper(tmp_path):
    digit = a_digit()
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = digit * 255  # black strokes, everything else transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "strokes.png")
    np.testing.assert_array_equal(load_digit(tmp_path / "strokes.png"), digit)


def test_sixteen_bit_grayscale_loads(tmp_path):
    digit = a_digit()
    Image.fromarray(digit.astype(np.uint16) * 65535).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_digit(tmp_path / "deep.png"), digit)


def test_blank_picture_loads_as_a_blank_digit(tmp_path):
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    assert not load_digit(tmp_path / "blank.png").any()


def png_claiming_size(path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose header says width x height."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not a picture at all"), "not an image"),
        (lambda p: png_claiming_size(p, 8000, 8000), "megapixels"),
        (lambda p: png_claiming_size(p, 20000, 20000), "megapixels"),
        (lambda p: p.write_bytes(a_png_bytes(p)[:60]), "could not be decoded"),
        (lambda p: Image.new("LAB", (8, 8)).save(p, format="TIFF"), "pixel mode"),
    ],
    ids=["empty", "text", "64-megapixels", "400-megapixels", "truncated", "lab-mode"],
)
def test_bad_pictures_raise_a_clear_error(tmp_path, make, message):
    path = tmp_path / "picture.png"
    make(path)
    with pytest.raises(PixelCNNError, match=message) as error:
        load_digit(path)
    assert str(path) in str(error.value)


def a_png_bytes(path) -> bytes:
    noise = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(path)
    return path.read_bytes()


def test_missing_picture_raises(tmp_path):
    with pytest.raises(PixelCNNError, match="does not exist"):
        load_digit(tmp_path / "nowhere.png")


def test_grid_tiles_images_with_gaps():
    images = np.ones((5, 3, 3), dtype=np.uint8)
    grid = grid_image(images, columns=2, scale=2, gap=1)

    # 3 rows and 2 columns of 6x6 tiles with 1-pixel gaps
    assert grid.shape == (3 * 6 + 2, 2 * 6 + 1)
    assert (grid[:6, :6] == 255).all() and (grid[6, :] == 128).all()
    assert (grid[14:, 7:] == 128).all()  # the sixth cell is empty


def test_save_grid_writes_a_png_of_the_grid(tmp_path):
    images = np.random.default_rng(0).integers(0, 2, (4, 28, 28))
    path = save_grid(images, tmp_path / "out" / "grid.png", scale=2, gap=2)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size == (2 * 56 + 2, 2 * 56 + 2)


def test_probability_maps_save_as_gray_levels(tmp_path):
    probabilities = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    save_png(probabilities, tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as picture:
        np.testing.assert_array_equal(np.asarray(picture), [[0, 128], [255, 0]])


def test_gif_holds_every_frame(tmp_path):
    frames = [np.eye(28, k=k) for k in range(3)]
    path = save_gif(frames, tmp_path / "fill.gif", scale=2)
    with Image.open(path) as picture:
        assert picture.n_frames == 3 and picture.size == (56, 56)


def test_gif_refuses_frames_of_different_shapes(tmp_path):
    with pytest.raises(PixelCNNError):
        save_gif([np.zeros((28, 28)), np.zeros((14, 14))], tmp_path / "bad.gif")
