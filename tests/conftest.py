"""Shared fixtures: where MNIST lies, tiny models, a tiny trained checkpoint.

Tests read MNIST from $PIXELCNN_DATA, else from ../shared/data/mnist beside
the checkout (where development and CI machines have it).
"""

import os
import struct
from pathlib import Path

import pytest
import torch

# Qt runs without a screen in tests; set before any Qt import
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def mnist_dir() -> Path | None:
    candidates = [os.environ.get("PIXELCNN_DATA"), ROOT.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "t10k-images-idx3-ubyte.gz").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = mnist_dir()
    if path is None:
        pytest.skip("MNIST not found: set PIXELCNN_DATA to the folder of the IDX files")
    return path


@pytest.fixture
def tiny_config():
    from engine.model import ModelConfig

    return ModelConfig(channels=8, blocks=2)


@pytest.fixture
def tiny_model(tiny_config):
    from engine.model import build_model

    torch.manual_seed(0)
    return build_model(tiny_config).eval()


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, mnist_path) -> Path:
    """A small two-stream model trained for a few dozen steps on real digits."""
    from engine.model import ModelConfig
    from engine.train import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("trained")
    config = TrainConfig(
        data=str(mnist_path),
        out=str(out),
        epochs=2,
        batch_size=32,
        subset=640,
        validation_size=200,
        warmup_steps=5,
        threads=1,
    )
    Trainer(config, ModelConfig(channels=8, blocks=2)).run()
    return out / "best.pt"


@pytest.fixture(scope="session")
def small_mnist(mnist_path, tmp_path_factory) -> Path:
    """The first 1000 training digits as an MNIST folder of their own: quick to load."""
    from engine.data import load_split

    digits = load_split(mnist_path, train=True)
    folder = tmp_path_factory.mktemp("mnist")
    for stem, array, magic in (
        ("train-images-idx3-ubyte", digits.images[:1000], 0x803),
        ("train-labels-idx1-ubyte", digits.labels[:1000], 0x801),
    ):
        header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
        (folder / stem).write_bytes(header + array.tobytes())
    return folder
