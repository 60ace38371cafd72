"""`python -m export.onnx`: the exported file, its metadata, its parity check
and exit codes for bad checkpoints and for a model that disagrees with torch.
"""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from engine.backend import TorchBackend
from engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from engine.data import binarize_fixed, load_split
from engine.errors import PixelCNNError
from engine.evaluate import dataset_nll, figures
from engine.model import ModelConfig, count_parameters
from export import onnx as onnx_export
from export.runtime import FORMAT_VERSION, cuda_unavailable_reason, open_model

ROOT = Path(__file__).resolve().parent.parent
DIFFERENCE = re.compile(r"largest \|logit difference\| (\S+)")


def run_cli(argv) -> SimpleNamespace:
    """main(argv) in this process, with its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = onnx_export.main([str(arg) for arg in argv])
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope="session")
def digits(mnist_path):
    return binarize_fixed(load_split(mnist_path, train=False).images[:16], "dynamic")


@pytest.fixture(scope="session")
def shipped(tmp_path_factory, trained_checkpoint, digits, mnist_path):
    """A checkpoint with test figures, as the shipped one has, exported by the CLI."""
    state = load_checkpoint(trained_checkpoint)
    model, _ = load_model(trained_checkpoint)
    state["test"] = figures(dataset_nll(model, digits))
    checkpoint = save_checkpoint(tmp_path_factory.mktemp("shipped") / "pixelcnn.pt", state)

    result = run_cli(["--checkpoint", checkpoint, "--data", mnist_path, "--device", "cpu"])
    return SimpleNamespace(
        result=result,
        checkpoint=checkpoint,
        state=state,
        model=model,
        onnx=checkpoint.with_suffix(".onnx"),
    )


def test_export_writes_the_file_beside_the_checkpoint(shipped):
    assert shipped.result.code == 0, shipped.result.err
    assert shipped.onnx.is_file()
    size = shipped.onnx.stat().st_size / 1e6
    last = shipped.result.out.strip().splitlines()[-1]
    assert last == f"wrote {shipped.onnx} ({size:.2f} MB, opset 18, float32)"
    assert not list(shipped.onnx.parent.glob("*.tmp"))
    assert shipped.onnx.stat().st_mode & 0o777 == 0o644


def test_export_reports_parity_on_digits_and_noise(shipped):
    out = shipped.result.out
    assert "MNIST test digits (dynamic)" in out and "random binary images" in out
    assert "batch   1" in out and "batch  32" in out

    differences = [float(value) for value in DIFFERENCE.findall(out)]
    assert len(differences) == 4
    assert max(differences) < onnx_export.TOLERANCE_FP32


def test_exported_file_matches_torch(shipped, digits):
    backend = open_model(shipped.onnx, device="cpu")
    images = digits.numpy()

    expected = TorchBackend(shipped.model).logits(images)
    assert np.abs(backend.logits(images) - expected).max() < 1e-4


def test_metadata_round_trip(shipped):
    backend = open_model(shipped.onnx, device="cpu")
    metadata = backend.metadata

    assert backend.config == ModelConfig.from_dict(shipped.state["config"])
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["architecture"] == "TwoStreamPixelCNN"
    assert metadata["binarization"] == shipped.state["train"]["binarization"]
    assert metadata["test"] == shipped.state["test"]
    assert metadata["parameters"] == count_parameters(shipped.model)
    assert metadata["checkpoint_step"] == shipped.state["step"]
    assert metadata["precision"] == "float32"
    assert metadata["source_checkpoint"] == "pixelcnn.pt"


def test_file_declares_the_dynamic_batch_and_opset(shipped):
    proto = onnx.load(shipped.onnx)
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim

    assert image.name == "image"
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]


def test_metadata_leaves_out_missing_test_figures(tiny_model):
    metadata = onnx_export.export_metadata({"train": {}}, tiny_model, Path("x.pt"), fp16=False)

    assert "test" not in metadata
    assert metadata["binarization"] == "unknown"
    assert list(metadata)[0] == "format" and list(metadata)[-1] == "config"


def test_parity_failure_exits_1_and_keeps_the_old_file(shipped, tmp_path, monkeypatch):
    # a real ONNX graph whose output bias is off by 0.5: every logit moves
    proto = onnx.load(shipped.onnx)
    bias_name = proto.graph.node[-1].input[2]
    (bias,) = [t for t in proto.graph.initializer if t.name == bias_name]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias_name))
    perturbed = proto.SerializeToString()
    monkeypatch.setattr(onnx_export, "export_to_onnx", lambda *args, **kwargs: perturbed)

    output = tmp_path / "model.onnx"
    output.write_bytes(b"the previous model")
    result = run_cli(["--checkpoint", shipped.checkpoint, "--output", output, "--device", "cpu"])

    assert result.code == 1
    assert "disagrees with PyTorch by 5.00e-01" in result.err
    assert output.read_bytes() == b"the previous model"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_missing_checkpoint_exits_2_without_traceback(tmp_path):
    absent = tmp_path / "absent.pt"
    result = subprocess.run(
        [sys.executable, "-m", "export.onnx", "--checkpoint", str(absent)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: checkpoint {absent} does not exist")
    assert "Traceback" not in result.stderr


def test_default_checkpoint_is_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli([])

    assert result.code == 2
    assert "assets/pixelcnn.pt does not exist" in result.err


def test_truncated_checkpoint_exits_2(trained_checkpoint, tmp_path):
    payload = trained_checkpoint.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(payload[: len(payload) // 2])
    result = run_cli(["--checkpoint", cut, "--output", tmp_path / "cut.onnx"])

    assert result.code == 2
    assert result.err.startswith(f"error: {cut} is not a") and "checkpoint" in result.err
    assert not (tmp_path / "cut.onnx").exists()


def test_text_file_as_checkpoint_exits_2(tmp_path):
    foreign = tmp_path / "notes.pt"
    foreign.write_text("not a checkpoint at all\n")
    result = run_cli(["--checkpoint", foreign])

    assert result.code == 2
    assert result.err.startswith(f"error: {foreign} is not a") and "checkpoint" in result.err


def test_onnx_file_as_checkpoint_exits_2(shipped, tmp_path):
    result = run_cli(["--checkpoint", shipped.onnx, "--output", tmp_path / "again.onnx"])

    assert result.code == 2
    assert result.err.startswith(f"error: {shipped.onnx} is not a")
    assert "checkpoint" in result.err


def test_plain_torch_file_is_not_a_checkpoint(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    result = run_cli(["--checkpoint", other])

    assert result.code == 2
    assert "is not a PixelCNN studio checkpoint" in result.err


@pytest.mark.parametrize("opset", [13, 99])
def test_unwritable_opset_exits_2(trained_checkpoint, opset):
    result = run_cli(["--checkpoint", trained_checkpoint, "--opset", opset])

    assert result.code == 2
    assert f"opset {opset} cannot be written" in result.err


def test_wrong_data_folder_exits_2(trained_checkpoint, tmp_path):
    result = run_cli(["--checkpoint", trained_checkpoint, "--data", tmp_path / "nowhere"])

    assert result.code == 2
    assert "nowhere" in result.err and "does not exist" in result.err


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="CUDA may work on this machine")
def test_cuda_verification_without_cuda_exits_2_before_exporting(trained_checkpoint, tmp_path):
    output = tmp_path / "never.onnx"
    result = run_cli(["--checkpoint", trained_checkpoint, "--output", output, "--device", "cuda"])

    assert result.code == 2
    assert result.err.startswith("error: device cuda was asked for, but CUDA cannot run here")
    assert result.out == "" and not output.exists()


def test_without_mnist_verification_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv("PIXELCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    sets, note = onnx_export.verification_images(None, "dynamic")

    assert note.startswith("no MNIST test digits found")
    assert [label for label, _ in sets] == ["random binary images"] * 2
    assert [len(images) for _, images in sets] == [1, 32]
    assert set(np.unique(sets[1][1])) == {0.0, 1.0}


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(PixelCNNError, match="could not write"):
        onnx_export.write_atomically(blocker / "model.onnx", b"payload")


@pytest.mark.slow
def test_fp16_export_keeps_a_float32_interface(shipped, tmp_path, digits):
    output = tmp_path / "half.onnx"
    result = run_cli(
        ["--checkpoint", shipped.checkpoint, "--output", output, "--fp16", "--device", "cpu"]
    )
    assert result.code == 0, result.err
    assert result.out.strip().endswith("opset 18, float16)")

    backend = open_model(output, device="cpu")
    images = digits.numpy()
    logits = backend.logits(images)
    assert logits.dtype == np.float32
    assert backend.metadata["precision"] == "float16"
    expected = TorchBackend(shipped.model).logits(images)
    assert np.abs(logits - expected).max() < onnx_export.TOLERANCE_FP16
