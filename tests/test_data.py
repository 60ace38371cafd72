"""MNIST as IDX files: reading and checking them, finding the folder, binarizing.

Broken files are built in tmp_path byte by byte; the real files come from the
`mnist_path` fixture.
"""

import gzip
import struct

import numpy as np
import pytest
import torch

from engine.data import (
    ENV_VAR,
    Split,
    binarize_fixed,
    load_split,
    resolve_data_dir,
    train_validation_split,
    training_batches,
)
from engine.data import main as data_main
from engine.errors import PixelCNNError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic, one big-endian size per dimension, the bytes."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(
    folder,
    prefix="t10k",
    images=None,
    labels=None,
    compress=False,
    images_magic=IMAGES_MAGIC,
    labels_magic=LABELS_MAGIC,
):
    """Writes an images and a labels file; returns their paths."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28)) if images is None else images
    labels = rng.integers(0, 10, len(images)) if labels is None else labels
    paths = []
    for kind, array, magic, ndim in (
        ("images", images, images_magic, 3),
        ("labels", labels, labels_magic, 1),
    ):
        payload = idx_bytes(np.asarray(array), magic)
        suffix = ".gz" if compress else ""
        path = folder / f"{prefix}-{kind}-idx{ndim}-ubyte{suffix}"
        path.write_bytes(gzip.compress(payload) if compress else payload)
        paths.append(path)
    return paths


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_reads_images_and_labels_as_written(tmp_path, compress):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    write_split(tmp_path, images=images, labels=labels, compress=compress)

    split = load_split(tmp_path, train=False)

    assert len(split) == 3
    assert split.images.dtype == np.uint8
    assert np.array_equal(split.images, images)
    assert np.array_equal(split.labels, labels)


def test_reads_the_real_mnist_files(mnist_path):
    test = load_split(mnist_path, train=False)

    assert test.images.shape == (10_000, 28, 28)
    assert test.labels.shape == (10_000,)
    assert set(np.unique(test.labels)) == set(range(10))


def test_truncated_file_is_refused_naming_it(tmp_path):
    images_path, _ = write_split(tmp_path)
    images_path.write_bytes(images_path.read_bytes()[:-100])

    with pytest.raises(PixelCNNError, match="truncated") as caught:
        load_split(tmp_path, train=False)
    assert str(images_path) in str(caught.value)


def test_file_cut_inside_its_header_is_refused_naming_it(tmp_path):
    images_path, _ = write_split(tmp_path)
    images_path.write_bytes(images_path.read_bytes()[:10])

    with pytest.raises(PixelCNNError, match="header") as caught:
        load_split(tmp_path, train=False)
    assert str(images_path) in str(caught.value)


def test_file_with_trailing_bytes_is_refused_naming_it(tmp_path):
    _, labels_path = write_split(tmp_path)
    labels_path.write_bytes(labels_path.read_bytes() + b"\0")

    with pytest.raises(PixelCNNError, match="longer than its header") as caught:
        load_split(tmp_path, train=False)
    assert str(labels_path) in str(caught.value)


def test_wrong_magic_number_is_refused_naming_the_file(tmp_path):
    # a labels file put where the images belong
    images_path, _ = write_split(tmp_path, images_magic=LABELS_MAGIC, images=np.zeros(5))

    with pytest.raises(PixelCNNError, match="magic number") as caught:
        load_split(tmp_path, train=False)
    assert str(images_path) in str(caught.value)


def test_counts_that_disagree_are_refused_naming_both_files(tmp_path):
    images_path, labels_path = write_split(tmp_path, labels=np.arange(4))

    with pytest.raises(PixelCNNError, match="5 images but") as caught:
        load_split(tmp_path, train=False)
    assert str(images_path) in str(caught.value)
    assert str(labels_path) in str(caught.value)


def test_damaged_gzip_is_refused_naming_the_file(tmp_path):
    images_path, _ = write_split(tmp_path, compress=True)
    payload = bytearray(images_path.read_bytes())
    # keep the gzip header, scramble the deflate stream
    payload[20:60] = bytes(range(40))
    images_path.write_bytes(bytes(payload))

    with pytest.raises(PixelCNNError, match="damaged gzip") as caught:
        load_split(tmp_path, train=False)
    assert str(images_path) in str(caught.value)


def test_gzip_cut_short_is_refused_naming_the_file(tmp_path):
    _, labels_path = write_split(tmp_path, compress=True)
    labels_path.write_bytes(labels_path.read_bytes()[:-12])

    with pytest.raises(PixelCNNError, match="damaged gzip") as caught:
        load_split(tmp_path, train=False)
    assert str(labels_path) in str(caught.value)


def test_images_that_are_not_28x28_are_refused_naming_the_file(tmp_path):
    images_path, _ = write_split(tmp_path, images=np.zeros((5, 27, 28)))

    with pytest.raises(PixelCNNError, match="not 28x28") as caught:
        load_split(tmp_path, train=False)
    assert str(images_path) in str(caught.value)


def test_label_above_nine_is_refused_naming_the_file(tmp_path):
    _, labels_path = write_split(tmp_path, labels=np.array([1, 2, 10, 3, 4]))

    with pytest.raises(PixelCNNError, match="label 10") as caught:
        load_split(tmp_path, train=False)
    assert str(labels_path) in str(caught.value)


def test_missing_file_is_reported_with_the_folder_and_what_to_do(tmp_path):
    write_split(tmp_path, prefix="train")

    with pytest.raises(PixelCNNError, match="t10k-images-idx3-ubyte") as caught:
        load_split(tmp_path, train=False)
    assert str(tmp_path) in str(caught.value)
    assert "download" in str(caught.value)


@pytest.fixture
def three_folders(tmp_path, monkeypatch):
    """An option folder, an environment folder and a cache home, all existing."""
    option, env = tmp_path / "option", tmp_path / "env"
    cache = tmp_path / "cache" / "pixelcnn-studio" / "mnist"
    for folder in (option, env, cache):
        folder.mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(ENV_VAR, str(env))
    return option, env, cache


def test_data_option_comes_before_the_environment_and_the_cache(three_folders):
    option, _, _ = three_folders

    assert resolve_data_dir(str(option)) == option


def test_environment_variable_comes_before_the_cache(three_folders):
    _, env, _ = three_folders

    assert resolve_data_dir(None) == env


def test_cache_folder_is_the_last_resort(three_folders, monkeypatch):
    _, _, cache = three_folders
    monkeypatch.delenv(ENV_VAR)

    assert resolve_data_dir(None) == cache


def test_missing_data_folder_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    with pytest.raises(PixelCNNError) as caught:
        resolve_data_dir(None)

    message = str(caught.value)
    assert str(tmp_path / "empty-cache") in message
    assert "--data" in message and ENV_VAR in message and "download" in message


def test_check_command_reads_both_splits(mnist_path, capsys):
    code = data_main(["check", "--data", str(mnist_path)])

    out = capsys.readouterr().out
    assert code == 0
    assert "train: 60000 digits" in out and "test: 10000 digits" in out


def test_check_command_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    code = data_main(["check", "--data", str(tmp_path / "nowhere")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1


def gray_images(count: int, value: int = 128) -> np.ndarray:
    return np.full((count, 28, 28), value, dtype=np.uint8)


def test_fixed_binarization_repeats_exactly_for_its_seed():
    images = gray_images(4)

    first, second = binarize_fixed(images, "dynamic"), binarize_fixed(images, "dynamic")

    assert torch.equal(first, second)
    assert not torch.equal(first, binarize_fixed(images, "dynamic", seed=1))
    assert first.shape == (4, 1, 28, 28) and first.dtype == torch.float32


def test_dynamic_binarization_draws_each_pixel_with_its_intensity():
    images = gray_images(50, value=64)

    binary = binarize_fixed(images, "dynamic")

    assert set(binary.unique().tolist()) == {0.0, 1.0}
    assert abs(binary.mean().item() - 64 / 255) < 0.01


def test_threshold_binarization_sets_pixels_above_half():
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, 0, :4] = [127, 128, 255, 0]

    binary = binarize_fixed(images, "threshold")

    assert binary[0, 0, 0, :4].tolist() == [0.0, 1.0, 1.0, 0.0]
    assert binary.sum() == 2


def test_unknown_binarization_is_refused():
    with pytest.raises(PixelCNNError, match="'otsu' is unknown"):
        binarize_fixed(gray_images(1), "otsu")
    with pytest.raises(PixelCNNError, match="'otsu' is unknown"):
        next(training_batches(gray_images(4), 2, epoch=0, seed=0, mode="otsu"))


def one_epoch(images, epoch, seed=0, mode="dynamic", batch_size=4, rank=0, world_size=1):
    return list(training_batches(images, batch_size, epoch, seed, mode, rank, world_size))


def test_dynamic_batches_are_drawn_afresh_every_epoch():
    images = gray_images(8)

    first, second = one_epoch(images, epoch=0), one_epoch(images, epoch=1)

    assert not torch.equal(torch.cat(first), torch.cat(second))


def test_dynamic_batches_repeat_for_the_same_seed_and_epoch():
    images = gray_images(8)

    assert all(
        torch.equal(a, b)
        for a, b in zip(one_epoch(images, epoch=3), one_epoch(images, epoch=3), strict=True)
    )
    assert not torch.equal(torch.cat(one_epoch(images, 3)), torch.cat(one_epoch(images, 3, 1)))


def marked_images(count: int) -> np.ndarray:
    """Image k has one white pixel, at raster position k, so a batch tells who is in it."""
    images = np.zeros((count, 28 * 28), dtype=np.uint8)
    images[np.arange(count), np.arange(count)] = 255
    return images.reshape(count, 28, 28)


def identities(batch: torch.Tensor) -> list[int]:
    return batch.flatten(1).argmax(1).tolist()


def test_an_epoch_shows_every_image_once_in_full_batches_only():
    images = marked_images(10)

    batches = one_epoch(images, epoch=0, mode="threshold", batch_size=4)

    # 10 digits make two batches of 4; the last two wait for another epoch
    assert [len(batch) for batch in batches] == [4, 4]
    seen = [k for batch in batches for k in identities(batch)]
    assert len(set(seen)) == 8
    assert seen != sorted(seen)


def test_two_ranks_together_see_the_single_process_batches():
    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)

    single = one_epoch(images, epoch=2, batch_size=8)
    rank0 = one_epoch(images, epoch=2, batch_size=8, rank=0, world_size=2)
    rank1 = one_epoch(images, epoch=2, batch_size=8, rank=1, world_size=2)

    assert len(single) == len(rank0) == len(rank1) == 3
    for whole, first, second in zip(single, rank0, rank1, strict=True):
        assert first.shape == (4, 1, 28, 28)
        assert torch.equal(torch.cat((first, second)), whole)


def numbered_split(count: int) -> Split:
    """A split whose labels are the digits' indices, to follow them through a shuffle."""
    return Split(marked_images(count), np.arange(count))


def test_validation_hold_out_is_disjoint_and_covers_the_training_set():
    train, validation = train_validation_split(numbered_split(100), validation_size=30)

    assert len(train) == 70 and len(validation) == 30
    assert set(train.labels).isdisjoint(validation.labels)
    assert set(train.labels) | set(validation.labels) == set(range(100))
    # images travel with their labels
    assert identities(torch.from_numpy(validation.images)) == validation.labels.tolist()


def test_validation_hold_out_is_the_same_on_every_run():
    first = train_validation_split(numbered_split(100), validation_size=30)[1]
    second = train_validation_split(numbered_split(100), validation_size=30)[1]

    assert np.array_equal(first.labels, second.labels)
    assert not np.array_equal(np.sort(first.labels), np.arange(30))


@pytest.mark.parametrize("size", [0, 100])
def test_validation_size_must_leave_both_parts_non_empty(size):
    with pytest.raises(PixelCNNError, match=f"validation size {size}"):
        train_validation_split(numbered_split(100), validation_size=size)
