"""Opens a model file for the studio: an ONNX file or a torch checkpoint, same contract.

An .onnx file runs in ONNX Runtime (CUDA where it works, else the CPU); a .pt
checkpoint runs through torch, which is imported only when one is needed. The
fast sampler needs a cached engine: an ONNX file gets it from its row and pixel
step graphs (export.incremental) when they lie beside it, else from the
checkpoint of the same name; a checkpoint gets it directly.
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
    cached: object | None = None  # a backend with incremental(), for the fast sampler
    # the test figures saved with the model (engine.evaluate), where it has them
    test_figures: dict | None = None

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
        """Whether the cached incremental session is there for the fast sampler."""
        return self.cached is not None

    def sampling_backend(self, fast: bool):
        """The cached backend for the fast sampler when there is one, else the model's own."""
        return self.cached if fast and self.cached is not None else self.backend

    def describe(self) -> str:
        return f"{self.path.name} ({self.kind}, {self.provider})"

    @property
    def test_nats(self) -> float | None:
        """Nats per image on the fixed-seed binarized MNIST test set, if measured."""
        figures = self.test_figures if isinstance(self.test_figures, dict) else {}
        value = figures.get("nats_per_image")
        return float(value) if isinstance(value, int | float) else None


def network_threads() -> int:
    """CPU threads for the network: every core but one, which the GUI keeps.

    On two cores ONNX Runtime with two spinning threads ran a pass several
    times slower than with one, as they fought the GUI for the same cores.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def limit_torch_threads() -> None:
    """Gives torch the network's share of the cores, for this process and all its users.

    With as many threads as cores, torch's spinning workers fight the GUI and
    ONNX Runtime: a busy two-core machine ran a tiny model's pass 30x slower.
    """
    import torch

    torch.set_num_threads(network_threads())


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

        backend = open_model(path, device, threads=network_threads())
        cached = cached_onnx(path, device) or cached_companion(
            path.with_suffix(".pt"), backend.config
        )
        figures = backend.metadata.get("test")
        loaded = LoadedModel(backend, path, "onnx", backend.provider, cached, figures)
    else:
        loaded = load_torch_checkpoint(path, device)
    log.info("opened %s", loaded.describe())
    return loaded


def load_torch_checkpoint(path: Path, device: str) -> LoadedModel:
    import torch

    from engine.backend import TorchBackend
    from engine.checkpoint import load_model

    limit_torch_threads()
    model, state = load_model(path)
    if device == "cuda" and not torch.cuda.is_available():
        raise PixelCNNError("device cuda was asked for, but torch sees no GPU; use cpu or auto.")
    target = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    # both share the one model: full passes for the naive sampler, the cache for the fast
    backend = TorchBackend(model, target)
    cached = cached_backend(model, target)
    return LoadedModel(backend, path, "torch", target.upper(), cached, state.get("test"))


def cached_backend(model, device: str = "cpu"):
    """The model behind the cached engine, or None for a model it cannot cache."""
    from engine.incremental import CachedTorchBackend

    try:
        return CachedTorchBackend(model, device, threads=network_threads())
    except PixelCNNError as error:
        log.info("no fast sampler for this model: %s", error)
        return None


def cached_onnx(path: Path, device: str):
    """The ONNX step graphs beside `path` as a cached backend, or None without them."""
    from export.incremental import incremental_paths, open_cached_model

    if not all(graph.is_file() for graph in incremental_paths(path)):
        return None
    try:
        return open_cached_model(path, device, threads=network_threads())
    except PixelCNNError as error:
        log.warning("the step graphs beside %s cannot be used: %s", path, error)
        return None


def cached_companion(checkpoint: Path, config):
    """The cached engine from the checkpoint beside an ONNX file, if it is the same network."""
    if not checkpoint.is_file():
        log.info("no %s beside the ONNX model: the fast sampler is not available", checkpoint)
        return None
    from engine.checkpoint import load_model

    limit_torch_threads()
    try:
        model, _ = load_model(checkpoint)
    except PixelCNNError as error:
        log.warning("the fast sampler is not available: %s", error)
        return None
    if config is not None and model.config != config:
        log.warning(
            "%s is not the network of the ONNX file beside it (%s, not %s); "
            "the fast sampler is not available",
            checkpoint,
            model.config,
            config,
        )
        return None
    return cached_backend(model)
