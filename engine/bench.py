"""Timing the network and the sampler on this machine, in one run.

    python -m engine.bench [--model assets/pixelcnn.onnx] [--repeats 3] [--quick]

Compares sampling as the reference implementations do it (one full forward
pass per pixel) with this engine's, and ends with one summary line.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from engine.complete import DEFAULT_MODEL, DEVICES, open_backend
from engine.errors import PixelCNNError
from engine.sampling import run_completion, sigmoid

SIDE = 28


def median_seconds(work, repeats: int) -> float:
    """Median wall time of `repeats` calls of work()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_sampling(backend, digits: int, rows: int, seed: int) -> np.ndarray:
    """The reference way: a full forward pass of the whole batch for every pixel."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((digits, 1, SIDE, SIDE), dtype=np.float32)
    for i in range(rows):
        for j in range(SIDE):
            logits = backend.logits(canvas)[:, 0, i, j]
            canvas[:, 0, i, j] = rng.random(digits) < sigmoid(logits.astype(np.float64))
    return canvas[:, 0]


def engine_sampling(backend, digits: int, rows: int, seed: int):
    """This engine's unconditional sampling of the first `rows` rows (all 28 by default)."""
    blank = np.zeros((SIDE, SIDE), dtype=np.uint8)
    known = np.zeros((SIDE, SIDE), dtype=bool)
    known[rows:] = True
    return run_completion(backend, blank, known, samples=digits, seed=seed)


def bottom_completion(backend, image: np.ndarray, digits: int, rows: int, seed: int):
    """Completes `rows` rows from the middle down (the whole bottom half by default)."""
    known = np.ones((SIDE, SIDE), dtype=bool)
    known[SIDE // 2 : SIDE // 2 + rows] = False
    return run_completion(backend, image, known, samples=digits, seed=seed)


def machine_line() -> str:
    python = platform.python_version()
    line = f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {python}"
    if "torch" in sys.modules:
        line += f", torch threads {sys.modules['torch'].get_num_threads()}"
    return line


def run_bench(model: str, device: str, digits: int, rows: int, repeats: int, seed: int) -> dict:
    """Every figure, in seconds; prints each as soon as it is measured."""
    backend = open_backend(model, device)
    fast = getattr(backend, "incremental", None) is not None
    path = "incremental session" if fast else "full forward passes, known pixels skipped"
    print(machine_line())
    print(f"model: {model} on {backend.name}")
    scope = f"{digits} digits" + (f", first {rows} rows" if rows < SIDE else "")

    # forward passes are cheap: warm up once, then take the median of many
    figures = {}
    for batch in sorted({1, digits}):
        images = np.zeros((batch, 1, SIDE, SIDE), dtype=np.float32)
        backend.logits(images)
        seconds = median_seconds(lambda images=images: backend.logits(images), max(5, repeats))
        figures[f"forward_{batch}"] = seconds
        print(f"forward pass, batch {batch:<3}            {seconds * 1e3:10.2f} ms")

    figures["naive"] = median_seconds(lambda: naive_sampling(backend, digits, rows, seed), repeats)
    print(
        f"naive sampling, {scope}: {figures['naive']:10.3f} s  "
        f"({rows * SIDE} full forward passes of batch {digits})"
    )

    samples = []
    figures["engine"] = median_seconds(
        lambda: samples.append(engine_sampling(backend, digits, rows, seed)), repeats
    )
    print(f"engine sampling, {scope}: {figures['engine']:9.3f} s  ({path})")

    # complete the engine's own first digit, so no data files are needed
    half = min(rows, SIDE // 2)
    digit = samples[0].images[0]
    figures["completion"] = median_seconds(
        lambda: bottom_completion(backend, digit, digits, half, seed), repeats
    )
    hidden = "the bottom half" if half == SIDE // 2 else f"rows {SIDE // 2}-{SIDE // 2 + half - 1}"
    print(f"completion of {hidden}, {digits} samples: {figures['completion']:9.3f} s")

    speedup = figures["naive"] / figures["engine"]
    cost = figures["engine"] / figures[f"forward_{digits}"]
    print(f"speedup vs naive: {speedup:.1f}x; cost in batched forward passes: {cost:.1f}")
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a .onnx file or .pt checkpoint")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--digits", type=int, default=16, help="digits sampled at once")
    parser.add_argument("--rows", type=int, default=SIDE, help="rows drawn per digit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 digits, 4 rows, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.digits, args.rows, args.repeats = 2, 4, 1

    try:
        if args.repeats < 1:
            raise PixelCNNError(f"--repeats must be at least 1, got {args.repeats}.")
        if args.digits < 1:
            raise PixelCNNError(f"--digits must be at least 1, got {args.digits}.")
        if not 1 <= args.rows <= SIDE:
            raise PixelCNNError(f"--rows must be between 1 and {SIDE}, got {args.rows}.")
        run_bench(args.model, args.device, args.digits, args.rows, args.repeats, args.seed)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
