"""Draw the README's figures from the shipped model, with fixed seeds.

    python tools/make_figures.py [--model assets/pixelcnn.onnx] [--out docs/figures]

samples.png: unconditional samples. complete_bottom.png and
complete_centre_smc.png: one shipped test digit per row, first with its hole
in grey, then completions (raster order; likelihood-aware SMC).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.complete import open_backend, shown_with_hole  # noqa: E402
from engine.errors import PixelCNNError  # noqa: E402
from engine.images import save_grid  # noqa: E402
from engine.masks import named_mask  # noqa: E402
from engine.sampling import run_completion, sample  # noqa: E402

# one digit of each of these classes from assets/digits.npz, in this order
CLASSES = (0, 2, 3, 4, 5, 7, 8, 9)
COMPLETIONS = 7
SEED = 0


def test_digits(classes=CLASSES) -> np.ndarray:
    """The first shipped digit of each class, binarized as the app does (grey > 127)."""
    shipped = np.load(ROOT / "assets" / "digits.npz")
    picks = [np.flatnonzero(shipped["labels"] == label)[0] for label in classes]
    return (shipped["images"][picks] > 127).astype(np.uint8)


def completion_rows(backend, digits, mask: str, mode: str, candidates: int) -> np.ndarray:
    """Per digit: the input with its hole, then COMPLETIONS completions; [N*(1+C),H,W]."""
    unknown = named_mask(mask)
    cells = []
    for n, digit in enumerate(digits):
        completion = run_completion(
            backend,
            digit,
            ~unknown,
            samples=COMPLETIONS,
            seed=SEED + n,
            mode=mode,
            candidates=candidates,
        )
        cells.append(shown_with_hole(digit, unknown)[None])
        cells.append(completion.images.astype(np.float32))
    return np.concatenate(cells)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/make_figures.py", description=__doc__)
    parser.add_argument("--model", default=str(ROOT / "assets" / "pixelcnn.onnx"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = parser.parse_args(argv)
    out = Path(args.out)

    try:
        backend = open_backend(args.model, "cpu")
        samples = sample(backend, 16, seed=SEED)
        print(f"wrote {save_grid(samples.images, out / 'samples.png', columns=4)}")

        digits = test_digits()
        columns = 1 + COMPLETIONS
        bottom = completion_rows(backend, digits, "bottom", "raster", 1)
        print(f"wrote {save_grid(bottom, out / 'complete_bottom.png', columns=columns)}")
        centre = completion_rows(backend, digits, "centre", "smc", 16)
        print(f"wrote {save_grid(centre, out / 'complete_centre_smc.png', columns=columns)}")
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
