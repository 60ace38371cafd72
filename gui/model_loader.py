"""Opens a model file for the studio: an ONNX file or a torch checkpoint, same contract.

An .onnx file runs in ONNX Runtime (CUDA where it works, else the CPU); a .pt
checkpoint runs through torch, which is imported only when one is opened.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "assets" / "pixelcnn.onnx"
DEVICES = ("auto", "cpu", "cuda")
MODEL_SUFFIXES = (".onnx", ".pt")


@dataclass
class LoadedModel:
    """A backend and where it came from, for the status bar and the extra views."""

    backend: object  # engine.backend.LogitBackend
    path: Path
    kind: str  # "onnx" or "torch"
    provider: str  # "CUDA" or "CPU"

    @property
    def checkpoint_path(self) -> Path | None:
        """The torch checkpoint of this model: itself, or a .pt beside the .onnx."""
        candidate = self.path if self.kind == "torch" else self.path.with_suffix(".pt")
        return candidate if candidate.is_file() else None

    @property
    def metrics_path(self) -> Path | None:
        candidate = self.path.parent / "metrics.jsonl"
        return candidate if candidate.is_file() else None

    @property
    def fast_sampler(self) -> bool:
        """Whether the backend offers the cached incremental session."""
        return callable(getattr(self.backend, "incremental", None))

    def describe(self) -> str:
        return f"{self.path.name} ({self.kind}, {self.provider})"


def load_model_file(path: str | os.PathLike, device: str = "auto") -> LoadedModel:
    """Opens `path` on `device`; raises PixelCNNError with what to do when it cannot."""
    path = Path(path)
    if device not in DEVICES:
        raise PixelCNNError(f"device '{device}' is unknown; use one of {', '.join(DEVICES)}.")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise PixelCNNError(
            f"{path.name} is neither an ONNX model (.onnx) nor a torch checkpoint (.pt); "
            "open one of those."
        )
    if not path.is_file():
        raise PixelCNNError(
            f"model {path} does not exist; open another with File > Open model, "
            "or pass --model PATH."
        )

    if path.suffix.lower() == ".onnx":
        from export.runtime import open_model

        backend = open_model(path, device)
        loaded = LoadedModel(backend, path, "onnx", backend.provider)
    else:
        loaded = load_torch_checkpoint(path, device)
    log.info("opened %s", loaded.describe())
    return loaded


def load_torch_checkpoint(path: Path, device: str) -> LoadedModel:
    import torch

    from engine.backend import TorchBackend
    from engine.checkpoint import load_model

    model, _ = load_model(path)
    if device == "cuda" and not torch.cuda.is_available():
        raise PixelCNNError("device cuda was asked for, but torch sees no GPU; use cpu or auto.")
    target = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    backend = TorchBackend(model, target)
    return LoadedModel(backend, path, "torch", target.upper())
