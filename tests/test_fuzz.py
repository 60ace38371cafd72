"""Fuzzing the readers of outside files: IDX, gzip, checkpoints and pictures.

Hypothesis feeds them arbitrary and near-valid bytes; whatever comes in, the
only exception that may escape is PixelCNNError, with a message. Runs are
derandomized, so CI sees the same cases every time.
"""

import gzip
import io
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import data as mnist
from engine.checkpoint import load_model, save_checkpoint
from engine.errors import PixelCNNError
from engine.images import load_digit
from engine.model import ModelConfig, build_model

IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int):
    return settings(FUZZ, max_examples=examples)


def refused_or(value_check, call):
    """Runs `call`; a PixelCNNError with a message is fine, a result must pass the check."""
    try:
        result = call()
    except PixelCNNError as error:
        assert str(error).strip(), "PixelCNNError without a message"
        return None
    value_check(result)
    return result


# --- IDX ----------------------------------------------------------------------------------


def check_idx_array(expected_magic: int, data: bytes):
    def check(array: np.ndarray):
        ndim = expected_magic & 0xFF
        assert array.dtype == np.uint8 and array.ndim == ndim
        assert array.size == len(data) - 4 - 4 * ndim

    return check


@fuzz(1500)
@given(data=st.binary(max_size=200), magic=st.sampled_from([IMAGES_MAGIC, LABELS_MAGIC]))
@example(data=struct.pack(">IIII", IMAGES_MAGIC, 2**31, 2**31, 4), magic=IMAGES_MAGIC)
@example(data=struct.pack(">IIII", IMAGES_MAGIC, 0, 28, 28), magic=IMAGES_MAGIC)
def test_idx_parser_refuses_arbitrary_bytes_with_a_message(data, magic):
    refused_or(check_idx_array(magic, data), lambda: mnist.parse_idx(data, magic, "fuzzed"))


@st.composite
def near_valid_idx(draw):
    """A right magic number and header, with dimensions and a body length that may lie."""
    magic = draw(st.sampled_from([IMAGES_MAGIC, LABELS_MAGIC]))
    ndim = magic & 0xFF
    small = st.integers(0, 40)
    huge = st.sampled_from([2**31, 2**32 - 1, 2**16, 2**21])
    shape = draw(st.lists(st.one_of(small, huge), min_size=ndim, max_size=ndim))
    wanted = math.prod(shape) if math.prod(shape) < 5000 else draw(st.integers(0, 5000))
    body = draw(st.integers(max(0, wanted - 3), wanted + 3))
    return magic, struct.pack(f">I{ndim}I", magic, *shape) + bytes(body)


@fuzz(400)
@given(case=near_valid_idx())
@example(case=(IMAGES_MAGIC, struct.pack(">IIII", IMAGES_MAGIC, 0, 2**32 - 1, 2**32 - 1)))
def test_idx_parser_checks_every_header_it_accepts(case):
    magic, data = case
    refused_or(check_idx_array(magic, data), lambda: mnist.parse_idx(data, magic, "fuzzed"))


@fuzz(400)
@given(payload=st.binary(max_size=300))
def test_gzip_reader_refuses_damaged_streams_with_a_message(payload):
    # always the gzip magic, so every case goes through the decompressor
    damaged = b"\x1f\x8b" + payload
    refused_or(lambda result: None, lambda: mnist.decompress(damaged, "fuzzed.gz"))


def write_pair(folder: Path, images: bytes, labels: bytes, compress: bool):
    for stem, payload in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        name = stem + (".gz" if compress else "")
        (folder / name).write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


@st.composite
def split_files(draw):
    """Two IDX files that are valid, near-valid or noise, compressed or not."""
    count = draw(st.integers(0, 4))
    labels_count = draw(st.sampled_from([count, count + 1, max(count - 1, 0)]))
    side = draw(st.sampled_from([28, 28, 27]))
    images = struct.pack(">IIII", IMAGES_MAGIC, count, side, 28) + bytes(count * side * 28)
    labels = struct.pack(">II", LABELS_MAGIC, labels_count) + bytes(
        draw(st.lists(st.integers(0, 12), min_size=labels_count, max_size=labels_count))
    )
    noise = st.binary(max_size=64)
    images = draw(st.one_of(st.just(images), noise, st.just(images[: draw(st.integers(0, 20))])))
    labels = draw(st.one_of(st.just(labels), noise, st.just(labels[:-1])))
    return images, labels, draw(st.booleans())


@fuzz(300)
@given(files=split_files())
def test_split_loader_refuses_bad_file_pairs_with_a_message(files):
    images, labels, compress = files
    with tempfile.TemporaryDirectory() as folder:
        write_pair(Path(folder), images, labels, compress)

        def check(split):
            assert split.images.shape[1:] == (28, 28)
            assert len(split.images) == len(split.labels)
            assert split.labels.size == 0 or split.labels.max() <= 9

        refused_or(check, lambda: mnist.load_split(folder, train=False))


# --- checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=4, blocks=1))
    path = tmp_path_factory.mktemp("fuzz") / "model.pt"
    save_checkpoint(path, {"config": model.config.to_dict(), "model": model.state_dict()})
    return path.read_bytes()


@fuzz(300)
@given(
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=4),
)
def test_damaged_checkpoint_loads_or_is_refused_with_a_message(checkpoint_bytes, cut, flips):
    damaged = bytearray(checkpoint_bytes[: max(1, int(len(checkpoint_bytes) * cut))])
    for where, mask in flips:
        damaged[min(int(where * len(damaged)), len(damaged) - 1)] ^= mask
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.pt"
        path.write_bytes(bytes(damaged))

        refused_or(lambda loaded: None, lambda: load_model(path))


# --- pictures -----------------------------------------------------------------------------

MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]
FORMATS = {
    "PNG": {"1", "L", "P", "LA", "RGB", "RGBA", "I;16"},
    "TIFF": set(MODES),
    "BMP": {"1", "L", "P", "RGB"},
}


@st.composite
def picture_files(draw):
    """Encoded pictures of many modes and sizes, sometimes cut short or bit-flipped."""
    mode = draw(st.sampled_from(MODES))
    format = draw(st.sampled_from([f for f, modes in FORMATS.items() if mode in modes]))
    width, height = draw(st.integers(1, 90)), draw(st.integers(1, 90))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    picture = Image.fromarray(pixels).convert(mode)
    stream = io.BytesIO()
    picture.save(stream, format=format)
    payload = bytearray(stream.getvalue())

    damage = draw(st.sampled_from(["none", "cut", "flip"]))
    if damage == "cut":
        payload = payload[: draw(st.integers(0, len(payload)))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 4))):
            payload[draw(st.integers(0, len(payload) - 1))] ^= draw(st.integers(1, 255))
    return bytes(payload)


def check_digit(digit: np.ndarray):
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    assert set(np.unique(digit)) <= {0, 1}


# damaged files make Pillow warn before it fails; the failure is what counts
@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz(300)
@given(payload=picture_files())
def test_picture_import_gives_a_digit_or_a_message(payload):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "picture"
        path.write_bytes(payload)
        refused_or(check_digit, lambda: load_digit(path))


# damaged files make Pillow warn before it fails; the failure is what counts
@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz(200)
@given(
    payload=st.binary(max_size=400),
    header=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"\xff\xd8\xff"]),
)
def test_picture_import_refuses_noise_with_a_message(payload, header):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "noise.png"
        path.write_bytes(header + payload)
        refused_or(check_digit, lambda: load_digit(path))
