"""The model shipped in assets/: good enough, and its files agree with each other.

`python main.py` opens these files, so a re-ship that forgot one of them (an
ONNX export of an older checkpoint, figures of another run) or a model worse
than the target fails here rather than in front of a user.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from engine.backend import TorchBackend
from engine.checkpoint import load_checkpoint, model_from_state
from engine.config import ModelConfig
from export.incremental import open_cached_model
from export.runtime import open_model

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CHECKPOINT = ASSETS / "pixelcnn.pt"
MODEL = ASSETS / "pixelcnn.onnx"

# the first shipped model's target on the fixed-seed binarized test set; PixelCNN
# (van den Oord et al., 2016) reports 81.30 nats
TARGET_NATS = 84.0
ASSETS_LIMIT_MB = 30
TEST_DIGITS = 10_000


@pytest.fixture(scope="module")
def shipped_state() -> dict:
    return load_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module")
def shipped_digits() -> np.ndarray:
    digits = np.load(ASSETS / "digits.npz")["images"][:16]
    return (digits > 127).astype(np.float32)[:, None]


def test_shipped_model_reaches_the_target_on_the_whole_test_set(shipped_state):
    test = shipped_state["test"]
    assert test["digits"] == TEST_DIGITS
    assert test["nats_per_image"] <= TARGET_NATS
    assert shipped_state["untrained"]["nats_per_image"] > 500


def test_shipped_checkpoint_is_the_best_epoch_of_its_metrics_log(shipped_state):
    records = [json.loads(line) for line in (ASSETS / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda record: record["val_nll"])
    assert best["epoch"] == shipped_state["epoch"]
    assert best["step"] == shipped_state["step"]
    assert best["val_nll"] == pytest.approx(shipped_state["best_validation"])


def test_training_state_continues_the_shipped_run(shipped_state):
    state = load_checkpoint(ASSETS / "train-state.pt")
    assert state["config"] == shipped_state["config"]
    assert state["step"] >= shipped_state["step"]
    assert state["train"]["epochs"] == shipped_state["train"]["epochs"]


def test_onnx_export_is_of_the_shipped_checkpoint(shipped_state, shipped_digits):
    backend = open_model(MODEL, device="cpu")
    assert backend.metadata["checkpoint_step"] == shipped_state["step"]
    assert backend.metadata["test"] == shipped_state["test"]
    assert backend.config == ModelConfig.from_dict(shipped_state["config"])

    expected = TorchBackend(model_from_state(shipped_state)).logits(shipped_digits)
    assert np.abs(backend.logits(shipped_digits) - expected).max() < 1e-4


def test_step_graphs_are_of_the_shipped_checkpoint(shipped_state):
    # open_cached_model refuses graphs of another configuration or checkpoint step
    backend = open_cached_model(MODEL, device="cpu")
    assert backend.metadata["checkpoint_step"] == shipped_state["step"]


def test_app_shows_the_shipped_test_figure(shipped_state):
    from gui.model_loader import load_model_file

    loaded = load_model_file(MODEL, device="cpu")
    assert loaded.test_nats == pytest.approx(shipped_state["test"]["nats_per_image"])


def test_assets_fit_the_size_limit():
    total = sum(path.stat().st_size for path in ASSETS.iterdir() if path.is_file())
    assert total < ASSETS_LIMIT_MB * 1e6


def test_shipped_digits_name_their_authors_and_licence():
    licence = (ASSETS / "DIGITS-LICENSE.md").read_text()
    assert "LeCun" in licence and "Cortes" in licence and "Burges" in licence
    assert "CC BY-SA 3.0" in licence
