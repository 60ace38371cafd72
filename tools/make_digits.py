"""Builds assets/digits.npz: a few hundred MNIST test digits shipped with the app.

The app loads one at random into the canvas; 30 of each class, chosen with a
fixed seed so the file is the same every time it is rebuilt.

    python tools/make_digits.py [--data DIR] [--per-class 30] [--out assets/digits.npz]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.data import load_split, resolve_data_dir  # noqa: E402
from engine.errors import PixelCNNError  # noqa: E402

SEED = 2016


def choose_digits(labels: np.ndarray, per_class: int, seed: int = SEED) -> np.ndarray:
    """Sorted test-set indices, `per_class` of each label, drawn without replacement."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == digit), per_class, replace=False)
        for digit in range(10)
    ]
    return np.sort(np.concatenate(chosen))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/make_digits.py", description=__doc__)
    parser.add_argument("--data", help="MNIST folder (default $PIXELCNN_DATA or the cache)")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "assets" / "digits.npz"))
    args = parser.parse_args(argv)

    try:
        test = load_split(resolve_data_dir(args.data), train=False)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    indices = choose_digits(test.labels, args.per_class)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        images=test.images[indices],
        labels=test.labels[indices],
        test_indices=indices.astype(np.int32),
    )
    print(f"wrote {out} ({len(indices)} digits of the MNIST test set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
