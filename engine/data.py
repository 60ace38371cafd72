"""MNIST as IDX files: finding, checking, reading and binarizing them.

The folder is taken from `--data DIR`, else the environment variable
PIXELCNN_DATA, else the user's cache folder. To fetch the files there:

    python -m engine.data download [--dir DIR]
"""

import argparse
import gzip
import hashlib
import logging
import math
import os
import struct
import sys
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_file
from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

ENV_VAR = "PIXELCNN_DATA"
SIDE = 28

# file stem -> (IDX magic number, MD5 of the uncompressed bytes); the sums
# are those of the official release (yann.lecun.com/exdb/mnist)
FILES = {
    "train-images-idx3-ubyte": (0x00000803, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (0x00000801, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (0x00000803, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (0x00000801, "27ae3e4e09519cfbb04c329615203637"),
}
# the mirror torchvision reads from; any folder serving the four .gz files works
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

VALIDATION_SIZE = 5000
SPLIT_SEED = 1234
TEST_BINARIZE_SEED = 2016
BINARIZATIONS = ("dynamic", "threshold")


@dataclass
class Split:
    """uint8 images [N,28,28] and their labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pixelcnn-studio" / "mnist"


def resolve_data_dir(option: str | os.PathLike | None = None) -> Path:
    """The MNIST folder: the option, else $PIXELCNN_DATA, else the cache."""
    if option:
        where, origin = Path(option), "--data"
    elif os.environ.get(ENV_VAR):
        where, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        where, origin = default_cache_dir(), "the cache folder"
    if not where.is_dir():
        raise PixelCNNError(
            f"MNIST folder {where} (from {origin}) does not exist: pass --data DIR, "
            f"set {ENV_VAR}, or run 'python -m engine.data download'."
        )
    return where


def find_file(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise PixelCNNError(
        f"{folder} has no {stem} or {stem}.gz: point --data or {ENV_VAR} at the folder "
        "holding the four MNIST files, or run 'python -m engine.data download'."
    )


def read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PixelCNNError(f"{path} could not be read ({error}).") from error
    return decompress(raw, str(path))


def parse_idx(data: bytes, expected_magic: int, source: str) -> np.ndarray:
    """Checks an IDX byte string's header and returns its uint8 array."""
    if len(data) < 4:
        raise PixelCNNError(f"{source} is {len(data)} bytes long, too short for an IDX file.")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise PixelCNNError(
            f"{source} has magic number {magic:#010x}, expected {expected_magic:#010x}: "
            "it is not the MNIST file of that name."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PixelCNNError(f"{source} is truncated inside its header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    # python ints: an int64 product wraps, and (2^31, 2^31, 4) would pass as 0 bytes
    expected = header + math.prod(shape)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise PixelCNNError(
            f"{source} is {what}: {len(data)} bytes, header says {expected} "
            f"for shape {tuple(shape)}."
        )
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    except ValueError as error:
        # an empty file may state other sizes no array can have, like (0, 2^32-1, 2^32-1)
        raise PixelCNNError(
            f"{source} states an impossible shape {tuple(shape)}; it is not an MNIST file."
        ) from error


def load_split(folder: str | os.PathLike, train: bool) -> Split:
    """Reads and checks one split's images and labels from a folder."""
    folder = Path(folder)
    prefix = "train" if train else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [find_file(folder, stem) for stem in stems]
    images, labels = (
        parse_idx(read_bytes(path), FILES[stem][0], str(path))
        for path, stem in zip(paths, stems, strict=True)
    )

    if images.shape[1:] != (SIDE, SIDE):
        raise PixelCNNError(f"{paths[0]} holds images of {images.shape[1:]}, not 28x28.")
    if len(images) != len(labels):
        raise PixelCNNError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels; "
            "the files do not belong together: fetch both again."
        )
    if labels.size and labels.max() > 9:
        raise PixelCNNError(f"{paths[1]} has a label {labels.max()} outside 0-9.")
    return Split(images, labels)


def train_validation_split(train: Split, validation_size: int = VALIDATION_SIZE):
    """Holds out a fixed, seeded part of the training set for validation."""
    if not 0 < validation_size < len(train):
        raise PixelCNNError(
            f"validation size {validation_size} must be between 1 and {len(train) - 1}."
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train))
    held, kept = order[:validation_size], order[validation_size:]
    return (
        Split(train.images[kept], train.labels[kept]),
        Split(train.images[held], train.labels[held]),
    )


def binarize_fixed(images: np.ndarray, mode: str, seed: int = TEST_BINARIZE_SEED) -> torch.Tensor:
    """A binarized copy that is the same on every run: float32 [N,1,28,28]."""
    intensity = images.astype(np.float32) / 255.0
    if mode == "threshold":
        binary = intensity > 0.5
    elif mode == "dynamic":
        # one fixed draw, so evaluation figures are comparable run to run
        binary = np.random.default_rng(seed).random(intensity.shape, dtype=np.float32) < intensity
    else:
        raise PixelCNNError(f"binarization '{mode}' is unknown; use one of {BINARIZATIONS}.")
    return torch.from_numpy(binary.astype(np.float32)).unsqueeze(1)


def binarize_batch(images: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """uint8 [B,28,28] -> float32 [B,1,28,28]; dynamic draws afresh each call."""
    intensity = images.float().div_(255.0).unsqueeze(1)
    if mode == "threshold":
        return (intensity > 0.5).float()
    if mode != "dynamic":
        raise PixelCNNError(f"binarization '{mode}' is unknown; use one of {BINARIZATIONS}.")
    return torch.bernoulli(intensity, generator=generator)


def training_batches(
    images: np.ndarray,
    batch_size: int,
    epoch: int,
    seed: int,
    mode: str,
    rank: int = 0,
    world_size: int = 1,
):
    """Shuffled binarized batches for one epoch, this rank's slice of each.

    Order and binarization depend only on (seed, epoch), so a resumed run sees
    the same data as an uninterrupted one, and N ranks together see exactly
    the global batches that one process would.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=generator)
    pixels = torch.from_numpy(images)
    share = batch_size // world_size
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = binarize_batch(pixels[order[start : start + batch_size]], mode, generator)
        yield batch[rank * share : (rank + 1) * share]


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def download(folder: str | os.PathLike | None = None, mirror: str = DEFAULT_MIRROR) -> Path:
    """Fetches the four .gz files into a folder and checks their content sums."""
    folder = Path(folder) if folder else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (_, md5) in FILES.items():
        url = mirror.rstrip("/") + "/" + stem + ".gz"
        target = folder / (stem + ".gz")
        if already_fetched(target, md5):
            log.info("%s is already there and checks out", target)
            continue
        log.info("fetching %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as error:
            raise PixelCNNError(
                f"could not fetch {url} ({error}); check the network or pass --mirror URL."
            ) from error
        content = decompress(payload, url)
        if md5_of(content) != md5:
            raise PixelCNNError(
                f"{url} does not match the known MNIST checksum; try another --mirror."
            )
        # a mirror may serve the raw bytes; the cache always holds gzip
        with atomic_file(target) as stream:
            stream.write(payload if payload[:2] == b"\x1f\x8b" else gzip.compress(content))
    return folder


def already_fetched(target: Path, md5: str) -> bool:
    """Whether a file from an earlier download is there and intact."""
    if not target.is_file():
        return False
    try:
        return md5_of(read_bytes(target)) == md5
    except PixelCNNError:
        # a damaged leftover is fetched again rather than stopping the download
        log.info("%s is damaged; fetching it again", target)
        return False


def decompress(payload: bytes, source: str) -> bytes:
    """The bytes themselves, or their gzip content if they are gzip."""
    if payload[:2] != b"\x1f\x8b":
        return payload
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as error:
        raise PixelCNNError(
            f"{source} is a damaged gzip file ({error}); download it again."
        ) from error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="fetch MNIST into the cache or --dir")
    fetch.add_argument("--dir", help=f"target folder (default {default_cache_dir()})")
    fetch.add_argument("--mirror", default=DEFAULT_MIRROR, help="base URL of the .gz files")
    check = commands.add_parser("check", help="read and check the four files")
    check.add_argument("--data", help=f"MNIST folder (default ${ENV_VAR} or the cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.command == "download":
            print(f"MNIST is in {download(args.dir, args.mirror)}")
        else:
            folder = resolve_data_dir(args.data)
            for train in (True, False):
                split = load_split(folder, train)
                print(f"{'train' if train else 'test'}: {len(split)} digits in {folder}")
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
