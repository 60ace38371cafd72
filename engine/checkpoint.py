"""Checkpoints: written atomically, read back safely, checked before use.

A checkpoint is a dict of tensors and plain values only, so it loads with
`torch.load(weights_only=True)` and no pickled code can run from it.
"""

import logging
import os
import re
import zipfile
from pathlib import Path

import torch

from engine.atomic import atomic_file
from engine.errors import PixelCNNError
from engine.model import ModelConfig, build_model

log = logging.getLogger(__name__)

FORMAT = "pixelcnn-studio-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Writes `state` plus the format tag to a temporary file, then renames it.

    A crash or a full disk during the write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the tags go last so that no key of the state can overwrite them
    payload = {**state, "format": FORMAT, "version": FORMAT_VERSION}
    # a kill -9 mid-write leaves <name>.<random>.tmp behind; the next training run in
    # that folder removes it once it holds the folder's lock (engine.run_folder)
    try:
        with atomic_file(path) as stream:
            torch.save(payload, stream)
    except (OSError, RuntimeError) as error:
        # torch.save reports a failed write to its stream (a full disk, say) as a
        # RuntimeError ("unexpected pos ...") whose context is the OSError
        cause = error if isinstance(error, OSError) else error.__context__
        if not isinstance(cause, OSError):
            raise
        raise PixelCNNError(
            f"could not write checkpoint {path} ({cause}); the previous one is untouched. "
            "Free some disk space or choose another --out folder."
        ) from error
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Reads and checks a checkpoint file; raises PixelCNNError on anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise PixelCNNError(f"checkpoint {path} does not exist; pass the path of a .pt file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise PixelCNNError(
            f"{path} is not a readable checkpoint (truncated or not written by torch): "
            f"{str(error) or type(error).__name__}"
        ) from error
    except Exception as error:
        # the weights-only unpickler names what it refused as "GLOBAL module.name";
        # other failures here are bytes that are no pickle at all
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        if refused:
            raise PixelCNNError(
                f"{path} was refused: it asks to load {refused.group(1)}, which is not a plain "
                "tensor or value and could run code. Only load checkpoints from sources you "
                "trust."
            ) from error
        raise PixelCNNError(
            f"{path} is not a checkpoint: torch cannot read it ({type(error).__name__}); "
            "pass a .pt file written by this program."
        ) from error

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PixelCNNError(f"{path} is not a PixelCNN studio checkpoint.")
    if state.get("version") != FORMAT_VERSION:
        raise PixelCNNError(
            f"{path} has checkpoint format version {state.get('version')}, "
            f"this program reads version {FORMAT_VERSION}."
        )
    for key in ("config", "model"):
        if key not in state:
            raise PixelCNNError(f"{path} has no '{key}' entry; it is incomplete.")
    return state


def model_from_state(state: dict, source: str = "checkpoint") -> torch.nn.Module:
    try:
        config = ModelConfig.from_dict(state["config"])
    except PixelCNNError as error:
        raise PixelCNNError(f"{source}: {error}") from error
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as error:
        first = str(error).splitlines()[0]
        raise PixelCNNError(
            f"{source} does not fit its own configuration {config}: {first}"
        ) from error
    return model.eval()


def load_model(path: str | os.PathLike):
    """(model in eval mode, checkpoint dict) from a checkpoint file."""
    state = load_checkpoint(path)
    return model_from_state(state, str(path)), state
