"""Completing and sampling digits from the command line, without the GUI.

    python -m engine.complete DIGIT.png --mask bottom --out completions.png
    python -m engine.complete sample --n 16 --out samples.png

--mask is bottom, right, centre, random or a mask PNG where white = unknown.
"""

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.errors import PixelCNNError
from engine.images import grid_image, load_digit, save_gif, save_grid
from engine.masks import NAMES, load_mask, named_mask
from engine.sampling import MODES, Completion, run_completion

log = logging.getLogger(__name__)

DEFAULT_MODEL = "assets/pixelcnn.onnx"
DEVICES = ("auto", "cpu", "cuda")


def open_backend(path: str | Path, device: str = "auto"):
    """A LogitBackend for a .onnx file (ONNX Runtime) or a .pt checkpoint (torch).

    Sampling takes the cached fast path where it can: a .onnx file with its
    row and pixel graphs beside it (python -m export.incremental), or a
    two-stream checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise PixelCNNError(
            f"model {path} does not exist; pass --model with a .onnx file or a .pt checkpoint."
        )
    if device not in DEVICES:
        raise PixelCNNError(f"device '{device}' is unknown; use one of {DEVICES}.")

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            from export.incremental import incremental_paths, open_cached_model
            from export.runtime import open_model
        except ImportError as error:
            raise PixelCNNError(
                f"ONNX models cannot be run here ({error}); pass a .pt checkpoint with --model."
            ) from error
        # the row and pixel graphs beside the model make sampling cached
        if all(step.is_file() for step in incremental_paths(path)):
            return open_cached_model(path, device=device)
        log.info("no cached-sampling graphs beside %s; sampling takes full passes", path)
        return open_model(path, device=device)
    if suffix == ".pt":
        return torch_backend(path, device)
    raise PixelCNNError(f"model {path} is neither a .onnx file nor a .pt checkpoint.")


def torch_backend(path: Path, device: str):
    import torch

    from engine.backend import TorchBackend
    from engine.checkpoint import load_model
    from engine.incremental import CachedTorchBackend

    if device == "cuda" and not torch.cuda.is_available():
        raise PixelCNNError("--device cuda was asked for, but CUDA is not available here.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_model(path)
    try:
        # the cached session serves two-stream models; others take full passes
        return CachedTorchBackend(model, device)
    except PixelCNNError:
        return TorchBackend(model, device)


def unknown_mask_from_option(option: str, fraction: float, seed: int) -> np.ndarray:
    if option in NAMES:
        return named_mask(option, fraction=fraction, seed=seed)
    if Path(option).is_file():
        return load_mask(option)
    raise PixelCNNError(
        f"--mask '{option}' is neither one of {NAMES} nor an existing mask PNG (white = unknown)."
    )


def shown_with_hole(image: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """The input as float with its unknown pixels mid-gray, for the first grid cell."""
    shown = image.astype(np.float32)
    shown[unknown] = 0.5
    return shown


class Progress:
    """A terminal progress bar, plus frames for a GIF when one was asked for."""

    FRAMES = 60  # about this many frames, whatever the number of steps

    def __init__(self, unknown: np.ndarray, keep_frames: bool, label: str):
        self.unknown = unknown
        self.keep_frames = keep_frames
        self.frames = []
        self.bar = tqdm(desc=label, unit="px", disable=None, leave=False)

    def __call__(self, step) -> None:
        if self.bar.total is None:
            self.bar.total = step.total
        self.bar.update(1)

        # each completion shown by its first particle, undrawn pixels gray
        every = max(1, step.total // self.FRAMES)
        if self.keep_frames and ((step.index + 1) % every == 0 or step.index + 1 == step.total):
            canvases = step.canvases[:: step.candidates].astype(np.float32)
            undrawn = self.unknown & np.isnan(step.prob_maps[:: step.candidates])
            canvases[undrawn] = 0.5
            self.frames.append(grid_image(canvases, gap=1))

    def close(self) -> None:
        self.bar.close()


def run(backend, image, unknown, samples, mode, candidates, args, label) -> Completion:
    progress = Progress(unknown, keep_frames=bool(args.gif), label=label)
    try:
        completion = run_completion(
            backend,
            image,
            ~unknown,
            samples=samples,
            temperature=args.temperature,
            seed=args.seed,
            mode=mode,
            candidates=candidates,
            fast=not args.naive,
            on_step=progress,
        )
    finally:
        progress.close()
    if args.gif and progress.frames:
        print(f"wrote {save_gif(progress.frames, args.gif, scale=args.scale)}")
    return completion


def add_common_options(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a .onnx file or .pt checkpoint")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--out", default=out, help="the PNG grid to write")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, help="repeat a run exactly")
    parser.add_argument("--scale", type=int, default=4, help="screen pixels per image pixel")
    parser.add_argument("--columns", type=int, help="grid columns (default: about square)")
    parser.add_argument("--gif", help="also write the filling as an animated GIF")
    parser.add_argument(
        "--naive", action="store_true", help="one full forward pass per pixel, no cached session"
    )


def complete_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.complete",
        description="Fill the unknown pixels of a digit picture. For unconditional "
        "samples run 'python -m engine.complete sample --help'.",
    )
    parser.add_argument("image", help="a PNG or JPEG of a digit (any size, any background)")
    parser.add_argument(
        "--mask",
        default="bottom",
        help=f"one of {', '.join(NAMES)}, or a mask PNG where white = unknown (default bottom)",
    )
    parser.add_argument("--fraction", type=float, default=0.5, help="unknown share for random")
    parser.add_argument("--mask-seed", type=int, default=0, help="seed of the random mask")
    parser.add_argument("--samples", type=int, default=8, help="completions to draw")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="raster",
        help="raster: plain sampling; importance or smc: weigh by the known pixels after the hole",
    )
    parser.add_argument("--candidates", type=int, default=8, help="particles per completion")
    add_common_options(parser, out="completions.png")
    return parser


def sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.complete sample", description="Sample digits unconditionally."
    )
    parser.add_argument("--n", type=int, default=16, help="digits to sample")
    add_common_options(parser, out="samples.png")
    return parser


def complete_command(args) -> int:
    image = load_digit(args.image)
    unknown = unknown_mask_from_option(args.mask, args.fraction, args.mask_seed)
    backend = open_backend(args.model, args.device)
    completion = run(
        backend, image, unknown, args.samples, args.mode, args.candidates, args, "completing"
    )

    for k in range(len(completion.images)):
        print(
            f"completion {k + 1}: log p {completion.log_likelihood[k]:8.2f} nats, "
            f"known pixels after the hole {completion.observed_log_likelihood[k]:8.2f}"
        )
    cells = np.concatenate((shown_with_hole(image, unknown)[None], completion.images))
    print(f"wrote {save_grid(cells, args.out, columns=args.columns, scale=args.scale)}")
    return 0


def sample_command(args) -> int:
    if args.n < 1:
        raise PixelCNNError(f"--n must be at least 1, got {args.n}.")
    backend = open_backend(args.model, args.device)
    unknown = np.ones((28, 28), dtype=bool)
    blank = np.zeros((28, 28), dtype=np.uint8)
    completion = run(backend, blank, unknown, args.n, "raster", 1, args, "sampling")

    mean = completion.log_likelihood.mean()
    print(f"sampled {args.n} digits with {backend.name}: mean log p {mean:.2f} nats")
    grid = save_grid(completion.images, args.out, columns=args.columns, scale=args.scale)
    print(f"wrote {grid}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sample"]:
        args, command = sample_parser().parse_args(argv[1:]), sample_command
    else:
        if argv[:1] == ["complete"]:
            argv = argv[1:]
        args, command = complete_parser().parse_args(argv), complete_command

    try:
        return command(args)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
