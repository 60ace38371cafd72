"""Checkpoints: the round trip, the atomic write, and every file they refuse.

A refused file must raise PixelCNNError, and a crafted pickle must not run
its code on loading.
"""

import pickle

import pytest
import torch

import engine.checkpoint
from engine.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from engine.errors import PixelCNNError
from engine.model import ModelConfig, build_model


def checkpoint_state(model) -> dict:
    return {"config": model.config.to_dict(), "model": model.state_dict()}


def test_saved_model_loads_back_giving_identical_logits(tmp_path, tiny_model):
    images = torch.randint(0, 2, (4, 1, 28, 28)).float()
    path = save_checkpoint(tmp_path / "model.pt", checkpoint_state(tiny_model))

    loaded, state = load_model(path)

    with torch.no_grad():
        assert torch.equal(loaded(images), tiny_model(images))
    assert loaded.config == tiny_model.config
    assert not loaded.training
    assert state["format"] == FORMAT


def test_save_leaves_only_the_checkpoint_in_its_folder(tmp_path, tiny_model):
    save_checkpoint(tmp_path / "runs" / "last.pt", checkpoint_state(tiny_model))
    save_checkpoint(tmp_path / "runs" / "last.pt", checkpoint_state(tiny_model))

    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["last.pt"]


def test_failed_write_keeps_the_previous_checkpoint_and_no_temporary(
    tmp_path, tiny_model, monkeypatch
):
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_state(tiny_model))
    before = path.read_bytes()

    def disk_full(payload, stream):
        stream.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.checkpoint.torch, "save", disk_full)
    with pytest.raises(PixelCNNError, match="previous one is untouched"):
        save_checkpoint(path, checkpoint_state(tiny_model))

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_checkpoint_is_reported_naming_it(tmp_path):
    with pytest.raises(PixelCNNError, match="does not exist") as caught:
        load_checkpoint(tmp_path / "absent.pt")
    assert "absent.pt" in str(caught.value)


def test_truncated_checkpoint_is_refused_naming_it(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.pt", checkpoint_state(tiny_model))
    path.write_bytes(path.read_bytes()[:-2000])

    with pytest.raises(PixelCNNError, match="not a readable checkpoint") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


def test_file_that_is_not_a_torch_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("just some text\n")

    with pytest.raises(
        PixelCNNError, match="not a checkpoint|not a readable checkpoint"
    ) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "payload",
    [{"weights": torch.zeros(3)}, torch.zeros(3), {"format": "someone-elses-format"}],
    ids=["plain dict", "bare tensor", "other format"],
)
def test_foreign_torch_file_is_refused(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)

    with pytest.raises(PixelCNNError, match="not a PixelCNN studio checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_format_version_is_refused(tmp_path, tiny_model):
    path = tmp_path / "future.pt"
    torch.save({**checkpoint_state(tiny_model), "format": FORMAT, "version": 99}, path)

    with pytest.raises(PixelCNNError, match="format version 99"):
        load_checkpoint(path)


def test_checkpoint_without_weights_is_refused(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "model.pt", {"config": tiny_model.config.to_dict()})

    with pytest.raises(PixelCNNError, match="no 'model' entry"):
        load_checkpoint(path)


def test_checkpoint_whose_config_does_not_fit_its_weights_is_refused(tmp_path, tiny_model):
    wider = ModelConfig(channels=tiny_model.config.channels * 2, blocks=2)
    path = save_checkpoint(
        tmp_path / "model.pt", {"config": wider.to_dict(), "model": tiny_model.state_dict()}
    )

    with pytest.raises(PixelCNNError, match="does not fit its own configuration") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_checkpoint_with_an_other_architectures_weights_is_refused(tmp_path, tiny_model):
    masked = build_model(ModelConfig(arch="masked", channels=8, blocks=2))
    state = {"config": tiny_model.config.to_dict(), "model": masked.state_dict()}
    path = save_checkpoint(tmp_path / "model.pt", state)

    with pytest.raises(PixelCNNError, match="does not fit"):
        load_model(path)


def test_checkpoint_with_a_malformed_config_is_refused(tmp_path, tiny_model):
    state = {"config": {"channels": 8, "heads": 4}, "model": tiny_model.state_dict()}
    path = save_checkpoint(tmp_path / "model.pt", state)

    with pytest.raises(PixelCNNError, match="unknown fields"):
        load_model(path)


class LeavesAMark:
    """Unpickling this calls open(path, 'w'): the file appears if the code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_crafted_pickle_is_refused_without_running_its_code(tmp_path, tiny_model):
    mark = tmp_path / "code-ran"
    path = tmp_path / "crafted.pt"
    state = {**checkpoint_state(tiny_model), "format": FORMAT, "version": 1}
    torch.save({**state, "extra": LeavesAMark(mark)}, path)

    with pytest.raises(PixelCNNError, match="refused"):
        load_checkpoint(path)

    assert not mark.exists()


def test_crafted_pickle_would_run_its_code_under_a_full_unpickler(tmp_path):
    # the control for the test above: the payload is live, so its absence
    # there is the loader's doing
    mark = tmp_path / "code-ran"
    path = tmp_path / "crafted.pt"
    torch.save({"extra": LeavesAMark(mark)}, path, pickle_module=pickle)

    torch.load(path, weights_only=False)

    assert mark.exists()
