"""ONNX Runtime sessions and the ONNX backend: parity with torch, providers,
the model contract on open, metadata, and bad files.
"""

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from engine.backend import TorchBackend
from engine.checkpoint import load_model
from engine.data import binarize_fixed, load_split
from engine.errors import PixelCNNError
from engine.model import ModelConfig
from export import runtime
from export.onnx import export_metadata, export_to_onnx, with_metadata
from export.runtime import create_session, cuda_unavailable_reason, open_model

cuda_missing = pytest.mark.skipif(
    cuda_unavailable_reason() is None, reason="CUDA may work on this machine"
)
ORT_NOISE = ("[E:onnxruntime", "[W:onnxruntime", "Failed to create CUDAExecutionProvider")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, trained_checkpoint):
    """The tiny trained checkpoint as an ONNX file, and its torch model."""
    model, state = load_model(trained_checkpoint)
    payload = with_metadata(
        export_to_onnx(model), export_metadata(state, model, trained_checkpoint, fp16=False)
    )
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    path.write_bytes(payload)
    return path, model


@pytest.fixture(scope="session")
def test_digits(mnist_path):
    return binarize_fixed(load_split(mnist_path, train=False).images[:16], "dynamic").numpy()


def save_graph(path, nodes, inputs, outputs, metadata=None):
    """Writes a small ONNX file; inputs and outputs are (name, type, shape)."""
    graph = helper.make_graph(
        nodes,
        "frame",
        [helper.make_tensor_value_info(*spec) for spec in inputs],
        [helper.make_tensor_value_info(*spec) for spec in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)
    return path


def identity_model(
    path,
    input_name="image",
    output_name="logits",
    shape=("N", 1, 28, 28),
    elem_type=TensorProto.FLOAT,
    metadata=None,
):
    """A one-node ONNX file whose logits are its input: the contract's bare frame."""
    node = helper.make_node("Identity", [input_name], [output_name])
    spec = (elem_type, list(shape))
    return save_graph(path, [node], [(input_name, *spec)], [(output_name, *spec)], metadata)


def our_metadata(**changes):
    values = {
        "format": runtime.FORMAT,
        "format_version": str(runtime.FORMAT_VERSION),
        "architecture": "TwoStreamPixelCNN",
        "config": '{"channels": 8, "blocks": 2}',
    }
    values.update(changes)
    return {key: value for key, value in values.items() if value is not None}


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_logits_match_torch_at_any_batch(exported, test_digits, batch):
    path, model = exported
    backend = open_model(path, device="cpu", threads=1)
    images = test_digits[:batch]

    expected = TorchBackend(model).logits(images)
    logits = backend.logits(images)
    assert logits.shape == (batch, 1, 28, 28)
    assert logits.dtype == np.float32
    assert np.abs(logits - expected).max() < 1e-4


def test_backend_describes_itself(exported, trained_checkpoint):
    path, _ = exported
    backend = open_model(path, device="cpu")

    assert backend.name == "onnx (CPU)"
    assert backend.provider == "CPU"
    assert backend.path == path
    state = torch.load(trained_checkpoint, weights_only=True)
    assert backend.config == ModelConfig.from_dict(state["config"])
    assert backend.metadata["format"] == runtime.FORMAT


def test_bool_and_uint8_images_give_the_float_logits(exported, test_digits):
    backend = open_model(exported[0], device="cpu")
    images = test_digits[:2]

    expected = backend.logits(images)
    assert np.array_equal(backend.logits(images.astype(bool)), expected)
    assert np.array_equal(backend.logits(images.astype(np.uint8)), expected)


@pytest.mark.parametrize("shape", [(2, 28, 28), (2, 1, 32, 32), (2, 3, 28, 28), (0, 1, 28, 28)])
def test_logits_refuse_images_of_the_wrong_shape(exported, shape):
    backend = open_model(exported[0], device="cpu")
    with pytest.raises(PixelCNNError, match=r"do not fit the model contract"):
        backend.logits(np.zeros(shape, dtype=np.float32))


def test_logits_refuse_non_numeric_images(exported):
    backend = open_model(exported[0], device="cpu")
    with pytest.raises(PixelCNNError, match="dtype <U1"):
        backend.logits(np.full((1, 1, 28, 28), "1"))


def test_session_from_bytes(exported, test_digits):
    path, model = exported
    session, provider = create_session(path.read_bytes(), device="cpu")

    (logits,) = session.run(["logits"], {"image": test_digits[:2]})
    assert provider == "CPU"
    assert np.abs(logits - TorchBackend(model).logits(test_digits[:2])).max() < 1e-4


@cuda_missing
def test_auto_falls_back_to_cpu_with_one_log_line(exported, caplog):
    with caplog.at_level(logging.INFO, logger="export.runtime"):
        _, provider = create_session(exported[0], device="auto")

    assert provider == "CPU"
    lines = [r.getMessage() for r in caplog.records if r.name == "export.runtime"]
    assert len(lines) == 1
    assert "CPU" in lines[0] and "CUDA unavailable" in lines[0]


@cuda_missing
def test_auto_prints_no_provider_errors(exported, capfd):
    create_session(exported[0], device="auto")

    err = capfd.readouterr().err
    assert not any(noise in err for noise in ORT_NOISE), err


@cuda_missing
def test_cuda_request_without_cuda_is_a_clear_error(exported, capfd):
    with pytest.raises(PixelCNNError, match="device cuda was asked for"):
        create_session(exported[0], device="cuda")
    assert not any(noise in capfd.readouterr().err for noise in ORT_NOISE)


@cuda_missing
def test_failed_cuda_probe_stays_quiet_and_falls_back(exported, capfd, caplog, monkeypatch):
    # the preflight is told to see nothing wrong, so ONNX Runtime itself tries CUDA
    monkeypatch.setattr(runtime, "cuda_unavailable_reason", lambda: None)
    with caplog.at_level(logging.INFO, logger="export.runtime"):
        session, provider = create_session(exported[0], device="auto")

    assert provider == "CPU"
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert not any(noise in capfd.readouterr().err for noise in ORT_NOISE)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "did not start" in warnings[0].getMessage()


@cuda_missing
def test_failed_cuda_probe_with_cuda_requested_is_an_error(exported, monkeypatch):
    monkeypatch.setattr(runtime, "cuda_unavailable_reason", lambda: None)
    with pytest.raises(PixelCNNError, match="CUDA provider did not start"):
        create_session(exported[0], device="cuda")


def test_unknown_device_is_an_error(exported):
    with pytest.raises(PixelCNNError, match="device 'gpu' is unknown"):
        create_session(exported[0], device="gpu")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PixelCNNError, match="does not exist.*export.onnx"):
        open_model(tmp_path / "absent.onnx")


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(PixelCNNError, match="is empty"):
        open_model(path)


def test_truncated_file_is_a_clear_error(exported, tmp_path):
    payload = exported[0].read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(PixelCNNError, match="cut.onnx is not a readable ONNX model"):
        open_model(path)


@pytest.mark.parametrize(
    "payload", [b"# a text file\nmodel = 'pixelcnn'\n", b"PK\x03\x04" + bytes(range(256)) * 4]
)
def test_foreign_file_is_a_clear_error(tmp_path, payload):
    path = tmp_path / "foreign.onnx"
    path.write_bytes(payload)
    with pytest.raises(PixelCNNError, match="is not a readable ONNX model"):
        open_model(path)


def test_checkpoint_passed_as_onnx_is_a_clear_error(trained_checkpoint):
    with pytest.raises(PixelCNNError, match="is not a readable ONNX model"):
        open_model(trained_checkpoint)


def test_contract_frame_opens(tmp_path):
    backend = open_model(identity_model(tmp_path / "frame.onnx"), device="cpu")
    images = np.eye(28, dtype=np.float32)[None, None].repeat(3, axis=0)

    assert np.array_equal(backend.logits(images), images)
    assert backend.config is None


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"input_name": "x"}, r"takes inputs \['x'\].*'image'"),
        ({"output_name": "y"}, r"gives outputs \['y'\].*'logits'"),
        ({"shape": ("N", 1, 32, 32)}, r"shape \[N, 1, 32, 32\].*\[N, 1, 28, 28\]"),
        ({"shape": ("N", 28, 28)}, r"shape \[N, 28, 28\], the contract needs \[N, 1, 28, 28\]"),
        ({"shape": ("N", 1, "H", "W")}, r"shape \[N, 1, H, W\]"),
        ({"shape": (1, 1, 28, 28)}, "fixed batch of 1"),
        ({"elem_type": TensorProto.DOUBLE}, r"type tensor\(double\).*float32"),
        ({"elem_type": TensorProto.FLOAT16}, r"type tensor\(float16\)"),
    ],
)
def test_contract_violations_are_named(tmp_path, changes, complaint):
    path = identity_model(tmp_path / "broken.onnx", **changes)
    with pytest.raises(PixelCNNError, match=complaint):
        open_model(path, device="cpu")


def test_second_input_breaks_the_contract(tmp_path):
    spec = (TensorProto.FLOAT, ["N", 1, 28, 28])
    node = helper.make_node("Add", ["image", "extra"], ["logits"])
    path = save_graph(
        tmp_path / "two.onnx", [node], [("image", *spec), ("extra", *spec)], [("logits", *spec)]
    )
    with pytest.raises(PixelCNNError, match=r"takes inputs \['image', 'extra'\]"):
        open_model(path, device="cpu")


def test_output_of_the_wrong_dtype_is_named(tmp_path):
    shape = ["N", 1, 28, 28]
    node = helper.make_node("Cast", ["image"], ["logits"], to=TensorProto.DOUBLE)
    path = save_graph(
        tmp_path / "cast.onnx",
        [node],
        [("image", TensorProto.FLOAT, shape)],
        [("logits", TensorProto.DOUBLE, shape)],
    )
    with pytest.raises(PixelCNNError, match=r"output 'logits' has type tensor\(double\)"):
        open_model(path, device="cpu")


def test_metadata_is_decoded(tmp_path):
    path = identity_model(tmp_path / "m.onnx", metadata=our_metadata(parameters="1234"))
    backend = open_model(path, device="cpu")

    assert backend.metadata["format_version"] == runtime.FORMAT_VERSION
    assert backend.metadata["parameters"] == 1234
    assert backend.config == ModelConfig(channels=8, blocks=2)


def test_metadata_of_other_exporters_is_kept_as_text(tmp_path):
    foreign = {"author": "someone", "config": "layers=3", "parameters": "many"}
    backend = open_model(identity_model(tmp_path / "f.onnx", metadata=foreign), device="cpu")

    assert backend.metadata == foreign
    assert backend.config is None


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"format_version": "2"}, "format version 2, this program reads version 1"),
        ({"config": None}, r"lacks \['config'\]"),
        ({"config": "{channels: 8"}, "metadata 'config' is unreadable"),
        ({"config": "[8, 2]"}, "'config' is not a JSON object"),
        ({"config": '{"width": 8}'}, "'config' is not usable.*unknown fields"),
        ({"parameters": "many"}, "metadata 'parameters' is unreadable"),
    ],
)
def test_bad_metadata_is_named(tmp_path, changes, complaint):
    path = identity_model(tmp_path / "bad.onnx", metadata=our_metadata(**changes))
    with pytest.raises(PixelCNNError, match=complaint):
        open_model(path, device="cpu")
