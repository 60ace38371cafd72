"""ONNX Runtime sessions for the PixelCNN studio, and the ONNX model behind the contract.

`create_session` picks CUDA where it really works and the CPU otherwise;
`open_model` checks a file against the model contract and wraps it in the
same small interface as engine.backend.TorchBackend.
"""

import contextlib
import ctypes
import functools
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from engine.config import ModelConfig
from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

FORMAT = "pixelcnn-studio-onnx"
FORMAT_VERSION = 1
DEVICES = ("auto", "cpu", "cuda")

# the model contract: input `image` and output `logits`, float32 [N,1,28,28]
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
IMAGE_SHAPE = (1, 28, 28)
FLOAT32 = "tensor(float)"

# metadata values are strings in ONNX; these keys hold JSON or integers
JSON_KEYS = ("config", "test")
INTEGER_KEYS = ("format_version", "parameters", "checkpoint_step")
REQUIRED_KEYS = ("format_version", "config", "architecture")

# the error types ONNX Runtime raises for a model it cannot load or place
ORT_ERRORS = tuple(
    getattr(ort_state, name)
    for name in (
        "Fail",
        "InvalidArgument",
        "InvalidProtobuf",
        "InvalidGraph",
        "NoSuchFile",
        "NoModel",
        "NotImplemented",
        "RuntimeException",
        "EPFail",
    )
    if hasattr(ort_state, name)
)

# ONNX Runtime's CUDA provider runs float32 convolutions in TF32 on Ampere and newer
# GPUs unless told not to (use_tf32, onnxruntime pull request 19426); float32 files
# should give float32 logits wherever they run
CUDA_OPTIONS = {"use_tf32": "0"}

# onnxruntime has no getter for its logger severity; 2 (warning) is its default
ORT_DEFAULT_SEVERITY = 2
ORT_FATAL_ONLY = 4


@contextlib.contextmanager
def quiet_onnxruntime():
    """Only fatal ONNX Runtime messages while a provider is probed.

    A failed CUDA provider logs errors to stderr and then falls back to the
    CPU without raising; the caller checks `get_providers()` and says in one
    line what happened instead.
    """
    ort.set_default_logger_severity(ORT_FATAL_ONLY)
    try:
        yield
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """Why the CUDA provider cannot work here, or None when it may.

    Loading the provider library the way ONNX Runtime does finds a missing
    CUDA, cuBLAS or driver library before any session is made, so nothing
    is logged. A None here is not a promise: a session still has to start.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (onnxruntime-gpu has one)"
    if not sys.platform.startswith("linux"):
        return None

    # the CUDA provider resolves its host symbols from the shared provider library
    capi = Path(ort_state.__file__).parent
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as error:
        return str(error).splitlines()[0]
    return None


def check_device(device: str) -> None:
    """Refuses an unknown device, and "cuda" where CUDA plainly cannot load."""
    if device not in DEVICES:
        raise PixelCNNError(f"device '{device}' is unknown; use one of {', '.join(DEVICES)}.")
    reason = cuda_unavailable_reason() if device == "cuda" else None
    if reason is not None:
        raise PixelCNNError(
            f"device cuda was asked for, but CUDA cannot run here: {reason}. "
            "Use device cpu or auto."
        )


def describe(model: str | os.PathLike | bytes) -> str:
    return "the in-memory ONNX model" if isinstance(model, bytes) else str(model)


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise PixelCNNError(
            f"ONNX model {path} does not exist; make one with 'python -m export.onnx' "
            "or pass the path of a .onnx file."
        )
    if path.stat().st_size == 0:
        raise PixelCNNError(f"ONNX model {path} is empty; export it again.")


def load_session(
    model: str | os.PathLike | bytes, providers: list, threads: int | None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except ORT_ERRORS as error:
        first = str(error).strip().splitlines()[0]
        raise PixelCNNError(
            f"{describe(model)} is not a readable ONNX model (truncated, damaged or "
            f"another kind of file): {first}. Export it again with 'python -m export.onnx'."
        ) from error


def create_session(
    model: str | os.PathLike | bytes, device: str = "auto", threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession for a file or serialized model, and "CUDA" or "CPU".

    device "auto" takes CUDA where it really works, else the CPU; "cuda"
    raises PixelCNNError where it does not; "cpu" never tries CUDA.
    """
    check_device(device)
    if not isinstance(model, bytes):
        check_model_file(Path(model))

    if device == "cpu":
        session = load_session(model, ["CPUExecutionProvider"], threads)
        log.info("ONNX Runtime runs %s on the CPU", describe(model))
        return session, "CPU"

    reason = cuda_unavailable_reason()
    if reason is not None:
        session = load_session(model, ["CPUExecutionProvider"], threads)
        log.info("ONNX Runtime runs %s on the CPU (CUDA unavailable: %s)", describe(model), reason)
        return session, "CPU"

    # the library loads, but only a session shows whether a GPU and driver answer
    cuda_first = [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
    with quiet_onnxruntime():
        try:
            session = load_session(model, cuda_first, threads)
        except PixelCNNError:
            # a CPU-only load tells a bad file apart from a failing CUDA provider
            session = load_session(model, ["CPUExecutionProvider"], threads)
    if "CUDAExecutionProvider" in session.get_providers():
        log.info("ONNX Runtime runs %s on CUDA", describe(model))
        return session, "CUDA"
    if device == "cuda":
        raise PixelCNNError(
            "device cuda was asked for, but the CUDA provider did not start (no GPU, or a "
            "driver, CUDA or cuDNN version onnxruntime cannot use); use device cpu or auto."
        )
    log.warning(
        "ONNX Runtime runs %s on the CPU: the CUDA provider loaded but did not start",
        describe(model),
    )
    return session, "CPU"


def dimension_text(dims) -> str:
    """[N, 1, 28, 28] style; a dimension without size or name shows as '?'."""
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_tensor(kind: str, node, expected_name: str, source: str) -> None:
    """One input or output against the contract: name, float32, [N,1,28,28]."""
    if node.type != FLOAT32:
        raise PixelCNNError(
            f"{source}: {kind} '{expected_name}' has type {node.type}, the model contract "
            f"needs {FLOAT32} (float32)."
        )
    shape = node.shape
    wanted = "[N, 1, 28, 28]"
    if shape is None or len(shape) != 4:
        shown = "of unknown rank" if shape is None else f"shape {dimension_text(shape)}"
        raise PixelCNNError(
            f"{source}: {kind} '{expected_name}' has {shown}, the contract needs {wanted}."
        )
    if isinstance(shape[0], int):
        raise PixelCNNError(
            f"{source}: {kind} '{expected_name}' has a fixed batch of {shape[0]}, the contract "
            "needs a dynamic batch N; export it again with 'python -m export.onnx'."
        )
    for size, expected in zip(shape[1:], IMAGE_SHAPE, strict=True):
        # an output size ONNX could not infer is named, not numbered; run time checks it
        if (isinstance(size, int) or kind == "input") and size != expected:
            raise PixelCNNError(
                f"{source}: {kind} '{expected_name}' has shape {dimension_text(shape)}, "
                f"the contract needs {wanted}."
            )


def check_contract(session: ort.InferenceSession, source: str) -> None:
    """Raises PixelCNNError naming what a session's model gets wrong about the contract."""
    inputs = session.get_inputs()
    names = [node.name for node in inputs]
    if names != [INPUT_NAME]:
        raise PixelCNNError(
            f"{source} takes inputs {names}; the model contract needs exactly one, '{INPUT_NAME}'."
        )
    check_tensor("input", inputs[0], INPUT_NAME, source)

    outputs = {node.name: node for node in session.get_outputs()}
    if OUTPUT_NAME not in outputs:
        raise PixelCNNError(
            f"{source} gives outputs {sorted(outputs)}; the model contract needs '{OUTPUT_NAME}'."
        )
    check_tensor("output", outputs[OUTPUT_NAME], OUTPUT_NAME, source)


def decode_metadata(raw: dict[str, str], source: str) -> dict:
    """Metadata strings to values: JSON keys to dicts, counts to integers.

    Files made elsewhere keep their strings as they are; ours must be
    complete and of a format version this program reads.
    """
    metadata = dict(raw)
    if metadata.get("format") != FORMAT:
        return metadata

    for key in JSON_KEYS + INTEGER_KEYS:
        if key not in metadata:
            continue
        try:
            metadata[key] = json.loads(raw[key]) if key in JSON_KEYS else int(raw[key])
        except ValueError as error:
            raise PixelCNNError(
                f"{source}: metadata '{key}' is unreadable ({error}); export the model again."
            ) from error

    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise PixelCNNError(
            f"{source}: metadata lacks {missing}; the file is truncated or was edited. "
            "Export it again with 'python -m export.onnx'."
        )
    if metadata["format_version"] > FORMAT_VERSION:
        raise PixelCNNError(
            f"{source} has ONNX format version {metadata['format_version']}, this program "
            f"reads version {FORMAT_VERSION}: update the program or export the model again."
        )
    return metadata


def config_from_metadata(metadata: dict, source: str):
    """The ModelConfig stored with one of our files, or None for a file made elsewhere."""
    if metadata.get("format") != FORMAT:
        return None

    values = metadata["config"]
    if not isinstance(values, dict):
        raise PixelCNNError(f"{source}: metadata 'config' is not a JSON object.")
    try:
        return ModelConfig.from_dict(values)
    except PixelCNNError as error:
        raise PixelCNNError(f"{source}: metadata 'config' is not usable: {error}") from error


class OnnxBackend:
    """An ONNX Runtime session behind the model contract, like TorchBackend.

    `metadata` holds the file's decoded metadata; `config` the ModelConfig
    it was exported from, or None for an ONNX file made elsewhere.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        provider: str,
        path: Path | None = None,
        metadata: dict | None = None,
        config=None,
    ):
        self.session = session
        self.provider = provider
        self.path = path
        self.metadata = metadata or {}
        self.config = config
        self.name = f"onnx ({provider})"

    def logits(self, images: np.ndarray) -> np.ndarray:
        """float32 [N,1,28,28] of 0/1 pixels -> float32 [N,1,28,28] logits."""
        images = np.asarray(images)
        if images.dtype.kind not in "biuf":
            raise PixelCNNError(
                f"images of dtype {images.dtype} cannot be fed to the model; pass 0/1 pixels "
                "as float32."
            )
        if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or images.shape[0] < 1:
            raise PixelCNNError(
                f"images of shape {images.shape} do not fit the model contract; pass "
                "[N, 1, 28, 28] with N at least 1."
            )
        batch = np.ascontiguousarray(images, dtype=np.float32)

        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        if logits.dtype != np.float32 or logits.shape != batch.shape:
            raise PixelCNNError(
                f"{self.path or 'the ONNX model'} returned logits of {logits.dtype} "
                f"{logits.shape} for images of {batch.shape}; it breaks the model contract."
            )
        return logits


def open_model(
    path: str | os.PathLike, device: str = "auto", threads: int | None = None
) -> OnnxBackend:
    """Opens an ONNX file, checks it against the model contract, and wraps it."""
    path = Path(path)
    session, provider = create_session(path, device, threads)
    check_contract(session, str(path))
    metadata = decode_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    config = config_from_metadata(metadata, str(path))
    return OnnxBackend(session, provider, path, metadata, config)
