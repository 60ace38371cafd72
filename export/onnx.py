"""Exports a checkpoint to the ONNX file the app runs, and checks it against PyTorch.

    python -m export.onnx [--checkpoint assets/pixelcnn.pt] [--output FILE] [--fp16]

More: --opset N, --device auto|cpu|cuda (where ONNX Runtime verifies), --data DIR.
"""

import argparse
import copy
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.atomic import atomic_file
from engine.checkpoint import load_model
from engine.data import binarize_fixed, load_split, resolve_data_dir
from engine.errors import PixelCNNError
from engine.model import count_parameters
from export.runtime import (
    DEVICES,
    FORMAT,
    FORMAT_VERSION,
    IMAGE_SHAPE,
    INPUT_NAME,
    OUTPUT_NAME,
    check_device,
    create_session,
)

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("assets/pixelcnn.pt")
# opset 18 runs on every onnxruntime since 1.14; the dynamo exporter writes nothing older
DEFAULT_OPSET = 18
MIN_OPSET = 18

# ONNX Runtime and PyTorch sum convolutions in different orders: on a 48-channel,
# 5-block model the fp32 logits differed by at most 3e-6. float16 keeps 11
# significant bits; there they differed by at most 5e-3 from the fp32 torch
# model, and the fp16 tolerance leaves a tenfold margin for larger models.
TOLERANCE_FP32 = 1e-4
TOLERANCE_FP16 = 5e-2

VERIFY_BATCHES = (1, 32)
RANDOM_SEED = 0


class Float16Interface(nn.Module):
    """Runs a model in float16 behind a float32 `image` -> `logits` interface."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image.half()).float()


def export_to_onnx(model: nn.Module, opset: int = DEFAULT_OPSET, fp16: bool = False) -> bytes:
    """The serialized ONNX graph of a model, its batch dimension dynamic."""
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise PixelCNNError(
            f"opset {opset} cannot be written: the exporter writes opsets {MIN_OPSET} to "
            f"{onnx.defs.onnx_opset_version()}; pass --opset in that range."
        )
    if fp16:
        # a copy, so the caller's float32 model stays the reference
        model = Float16Interface(copy.deepcopy(model))
    model = model.eval()

    # torch.export traces with symbolic sizes; batch 2 keeps it from specialising N to 1
    example = torch.zeros(2, *IMAGE_SHAPE)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": {0: batch}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    proto = program.model_proto

    written = {entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise PixelCNNError(
            f"the exporter wrote opset {sorted(written)} instead of {opset}; try --opset "
            f"{DEFAULT_OPSET}."
        )
    return proto.SerializeToString()


def export_metadata(state: dict, model: nn.Module, checkpoint: Path, fp16: bool) -> dict:
    """The metadata_props of the file: everything the app shows about the model.

    `format` comes first and `config` last, so a file cut between entries
    loses a required one and is refused on open.
    """
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "architecture": type(model).__name__,
        "binarization": state.get("train", {}).get("binarization", "unknown"),
        "parameters": str(count_parameters(model)),
        "precision": "float16" if fp16 else "float32",
        "source_checkpoint": checkpoint.name,
        "exporter": f"torch {torch.__version__}",
    }
    if state.get("step") is not None:
        metadata["checkpoint_step"] = str(state["step"])
    if state.get("test"):
        metadata["test"] = json.dumps(state["test"], sort_keys=True)
    metadata["config"] = json.dumps(model.config.to_dict(), sort_keys=True)
    return metadata


def with_metadata(onnx_bytes: bytes, metadata: dict) -> bytes:
    proto = onnx.load_from_string(onnx_bytes)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        "PixelCNN on binarized MNIST: image float32 [N,1,28,28] of 0/1 pixels -> logits "
        "float32 [N,1,28,28], logit (i, j) of p(x[i, j] = 1 | the pixels before it)."
    )
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


@dataclass
class ParityCheck:
    """The largest |ONNX - PyTorch| logit difference on one set of images."""

    images: str
    batch: int
    max_difference: float


def verification_images(data: str | None, binarization: str, batches=VERIFY_BATCHES):
    """(label, images) sets to compare on, and a note when no MNIST was found.

    A --data folder that is given but wrong is the user's error; no folder
    at all just leaves the random images.
    """
    largest = max(batches)
    sets, note = [], None
    try:
        folder = resolve_data_dir(data)
        digits = load_split(folder, train=False).images[:largest]
        binary = binarize_fixed(digits, binarization).numpy()
        sets += [(f"MNIST test digits ({binarization})", binary[:n]) for n in batches]
    except PixelCNNError as error:
        if data:
            raise
        reason = str(error).rstrip(".")
        note = f"no MNIST test digits found ({reason}); verifying on random binary images only"

    rng = np.random.default_rng(RANDOM_SEED)
    noise = (rng.random((largest, *IMAGE_SHAPE)) < 0.5).astype(np.float32)
    sets += [("random binary images", noise[:n]) for n in batches]
    return sets, note


@torch.no_grad()
def compare_with_torch(session, model: nn.Module, image_sets) -> list[ParityCheck]:
    """Runs each set through the ONNX session and the float32 torch model."""
    checks = []
    for label, images in image_sets:
        (onnx_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
        torch_logits = model(torch.from_numpy(images)).numpy()
        difference = float(np.abs(onnx_logits - torch_logits).max())
        checks.append(ParityCheck(label, len(images), difference))
    return checks


def write_atomically(path: Path, payload: bytes) -> None:
    """A temporary file beside the target, renamed over it once complete."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as stream:
            stream.write(payload)
    except OSError as error:
        raise PixelCNNError(
            f"could not write {path} ({error}); choose another --output or free some space."
        ) from error


def show_own_logs() -> None:
    """Our info lines on stderr; the exporter's progress and rewrite notes stay quiet."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("export").setLevel(logging.INFO)
    # torch.onnx warns about every torchvision operator it cannot register
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", default=str(DEFAULT_CHECKPOINT), help="the .pt file (default: %(default)s)"
    )
    parser.add_argument("--output", help="the .onnx file (default: beside the checkpoint)")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)"
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="float16 weights and arithmetic for GPUs; the image and logits stay float32",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where ONNX Runtime verifies the file"
    )
    parser.add_argument("--data", help="MNIST folder for verification (default $PIXELCNN_DATA)")
    args = parser.parse_args(argv)
    show_own_logs()

    checkpoint = Path(args.checkpoint)
    output = Path(args.output) if args.output else checkpoint.with_suffix(".onnx")
    tolerance = TOLERANCE_FP16 if args.fp16 else TOLERANCE_FP32
    try:
        # a device that cannot work should fail before the export, not after it
        check_device(args.device)
        model, state = load_model(checkpoint)
        binarization = state.get("train", {}).get("binarization", "dynamic")
        image_sets, note = verification_images(args.data, binarization)

        onnx_bytes = export_to_onnx(model, args.opset, args.fp16)
        metadata = export_metadata(state, model, checkpoint, args.fp16)
        onnx_bytes = with_metadata(onnx_bytes, metadata)
        session, provider = create_session(onnx_bytes, args.device)
        checks = compare_with_torch(session, model, image_sets)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if note:
        print(note)
    precision = "float16" if args.fp16 else "float32"
    print(f"ONNX Runtime ({provider}, {precision}) against PyTorch (CPU, float32):")
    for check in checks:
        print(
            f"  {check.images:<36} batch {check.batch:>3}: "
            f"largest |logit difference| {check.max_difference:.2e}"
        )
    worst = max(check.max_difference for check in checks)
    print(f"largest absolute logit difference {worst:.2e} (tolerance {tolerance:.0e})")
    # written this way round, a NaN difference fails too
    if not worst <= tolerance:
        print(
            f"error: the ONNX model disagrees with PyTorch by {worst:.2e} > {tolerance:.0e}; "
            f"{output} was not written.",
            file=sys.stderr,
        )
        return 1

    try:
        write_atomically(output, onnx_bytes)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = len(onnx_bytes) / 1e6
    print(f"wrote {output} ({size:.2f} MB, opset {args.opset}, {precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
