"""Test-set likelihood of a checkpoint, beside an untrained net of the same shape.

    python -m engine.evaluate --checkpoint assets/pixelcnn.pt [--data DIR]

Figures are on the fixed-seed binarized MNIST test set (10,000 digits), so
they compare run to run and with the published ones.
"""

import argparse
import logging
import math
import sys

import torch
import torch.nn.functional as F

from engine.checkpoint import load_model
from engine.data import binarize_fixed, load_split, resolve_data_dir
from engine.errors import PixelCNNError
from engine.model import build_model

log = logging.getLogger(__name__)
PIXELS = 28 * 28


def nats_per_image(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(image) in nats for each image of a batch, from its logits."""
    bce = F.binary_cross_entropy_with_logits(logits, images, reduction="none")
    return bce.flatten(1).sum(1)


@torch.no_grad()
def dataset_nll(model, images: torch.Tensor, batch_size: int = 500, device="cpu") -> float:
    """Mean negative log-likelihood in nats per image over a [N,1,H,W] tensor."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        total += nats_per_image(model(batch), batch).sum().item()
    model.train(was_training)
    return total / max(len(images), 1)


def figures(nats: float, pixels: int = PIXELS) -> dict:
    """One NLL in the three units people quote."""
    return {
        "nats_per_image": nats,
        "bits_per_dim": nats / (pixels * math.log(2)),
        "bce_per_pixel": nats / pixels,
    }


def format_figures(label: str, values: dict) -> str:
    return (
        f"{label:<10} {values['nats_per_image']:8.2f} nats/image  "
        f"{values['bits_per_dim']:.4f} bits/dim  {values['bce_per_pixel']:.4f} BCE/pixel"
    )


def evaluate_checkpoint(path, data=None, limit=None, device="cpu", seed=0) -> dict:
    """Test figures of a checkpoint and of a fresh network of its configuration."""
    model, state = load_model(path)
    binarization = state.get("train", {}).get("binarization", "dynamic")
    test = load_split(resolve_data_dir(data), train=False)
    images = binarize_fixed(test.images[:limit], binarization)

    torch.manual_seed(seed)
    untrained = build_model(model.config)
    return {
        "digits": len(images),
        "binarization": binarization,
        "trained": figures(dataset_nll(model.to(device), images, device=device)),
        "untrained": figures(dataset_nll(untrained.to(device), images, device=device)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.evaluate", description=__doc__)
    parser.add_argument("--checkpoint", default="assets/pixelcnn.pt")
    parser.add_argument("--data", help="MNIST folder (default $PIXELCNN_DATA or the cache)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test digits")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)

    try:
        if args.limit is not None and args.limit < 1:
            raise PixelCNNError(f"--limit must be at least 1, got {args.limit}.")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise PixelCNNError("--device cuda was asked for, but CUDA is not available here.")
        result = evaluate_checkpoint(args.checkpoint, args.data, args.limit, args.device)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print(
        f"test NLL on {result['digits']} digits "
        f"({result['binarization']} binarization, fixed seed)"
    )
    print(format_figures("trained", result["trained"]))
    print(format_figures("untrained", result["untrained"]))
    gain = result["untrained"]["nats_per_image"] - result["trained"]["nats_per_image"]
    print(f"training gained {gain:.2f} nats per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
