"""What the explanatory views share: the loaded network, example digits, the metrics log.

Loads them once for all views and says on screen where they came from. Also
runs any one view alone:

    python -m gui.receptive_field_view [--checkpoint assets/pixelcnn.pt] [--metrics FILE]
"""

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from engine.checkpoint import load_model
from engine.errors import PixelCNNError
from engine.model import ModelConfig, build_model

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "pixelcnn.pt"
DEFAULT_METRICS = ASSETS / "metrics.jsonl"
DEFAULT_DIGITS = ASSETS / "digits.npz"
SIDE = 28


@dataclass
class ViewContext:
    """The network and examples behind the views, with a sentence on their origin."""

    model: nn.Module
    config: ModelConfig
    source: str  # shown on screen: which network the views explain
    trained: bool
    metrics_path: Path | None = None
    digits: np.ndarray = field(default_factory=lambda: np.zeros((0, SIDE, SIDE), np.float32))
    digit_names: list[str] = field(default_factory=list)
    digit_labels: np.ndarray | None = None

    def example_indices(self, count: int = 10) -> list[int]:
        """A few digits for menus: the first of each class when labels ship."""
        if self.digit_labels is None:
            return list(range(min(count, len(self.digits))))
        firsts = {}
        for index, label in enumerate(self.digit_labels):
            firsts.setdefault(int(label), index)
        return sorted(firsts.values())[:count]


def drawn_digits() -> tuple[np.ndarray, list[str]]:
    """Three digits drawn from line segments, for when no MNIST examples ship."""
    rows, columns = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)

    def stroke(points, width=1.6):
        ink = np.zeros((SIDE, SIDE), bool)
        for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=True):
            dr, dc = r1 - r0, c1 - c0
            t = ((rows - r0) * dr + (columns - c0) * dc) / max(dr * dr + dc * dc, 1e-6)
            t = np.clip(t, 0, 1)
            distance = np.hypot(rows - (r0 + t * dr), columns - (c0 + t * dc))
            ink |= distance <= width
        return ink

    angles = np.linspace(0, 2 * np.pi, 40)
    zero = stroke(list(zip(14 + 8.5 * np.sin(angles), 14 + 5.5 * np.cos(angles), strict=True)))
    one = stroke([(5, 15), (23, 12)])
    seven = stroke([(6, 7), (6, 20), (23, 11)])
    images = np.stack([zero, one, seven]).astype(np.float32)
    return images, ["drawn 0", "drawn 1", "drawn 7"]


def load_digits(path: Path) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Binary float32 digits [N,28,28], names and labels, from an .npz of uint8 images."""
    try:
        with np.load(path) as archive:
            key = "images" if "images" in archive.files else archive.files[0]
            images = np.asarray(archive[key])
            labels = np.asarray(archive["labels"]) if "labels" in archive.files else None
    except (OSError, ValueError, IndexError) as error:
        raise PixelCNNError(f"could not read example digits from {path}: {error}") from error
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise PixelCNNError(f"{path} holds images of shape {images.shape}, not [N,28,28].")

    # grey levels are binarized at half intensity, as the test set is
    threshold = 127 if images.max() > 1 else 0
    binary = (images > threshold).astype(np.float32)
    names = [
        f"test digit {n + 1}" + (f" (a {labels[n]})" if labels is not None else "")
        for n in range(len(binary))
    ]
    return binary, names, labels


def load_context(
    checkpoint_path: Path | None,
    metrics_path: Path | None,
    digits_path: Path | None = DEFAULT_DIGITS,
) -> ViewContext:
    """Loads the checkpoint; without one, or with a bad one, a fresh default network."""
    model, trained, problem = None, False, ""
    if checkpoint_path is not None:
        try:
            model, state = load_model(checkpoint_path)
            trained = True
        except PixelCNNError as error:
            problem = f" ({error})"
            log.warning("views use a fresh network: %s", error)

    if model is not None:
        epoch, step = state.get("epoch"), state.get("step")
        best = state.get("best_validation")
        details = []
        if isinstance(epoch, int):
            details.append(f"{epoch} epochs")
        if isinstance(step, int):
            details.append(f"{step} steps")
        if isinstance(best, float) and best < float("inf"):
            details.append(f"validation NLL {best:.2f} nats")
        source = f"trained network from {Path(checkpoint_path).name}" + (
            f" ({', '.join(details)})" if details else ""
        )
    else:
        model = build_model(ModelConfig()).eval()
        source = (
            "no trained network loaded" + problem + ": a fresh network of the default "
            "configuration with random weights"
        )

    digits, names, labels = np.zeros((0, SIDE, SIDE), np.float32), [], None
    if digits_path is not None and Path(digits_path).is_file():
        try:
            digits, names, labels = load_digits(Path(digits_path))
        except PixelCNNError as error:
            log.warning("%s", error)
    if len(digits) == 0:
        digits, names = drawn_digits()

    return ViewContext(
        model=model,
        config=model.config,
        source=source,
        trained=trained,
        metrics_path=metrics_path,
        digits=digits,
        digit_names=names,
        digit_labels=labels,
    )


def light_plot():
    """A pyqtgraph plot on white with dark axes, to sit beside the white cell grids."""
    import pyqtgraph as pg

    plot = pg.PlotWidget(background="w")
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(70, 70, 70))
        axis.setTextPen(pg.mkPen(30, 30, 30))
    return plot


def run_standalone(make_view, argv=None) -> int:
    """Opens one view in its own window: the `__main__` of every view module."""
    from PySide6.QtWidgets import QApplication

    parser = argparse.ArgumentParser(description="show one of the studio's views on its own")
    shipped = DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None
    parser.add_argument("--checkpoint", type=Path, default=shipped)
    parser.add_argument("--metrics", type=Path, default=DEFAULT_METRICS)
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    parser.add_argument(
        "--quit-after", type=float, default=0, help="close after this many seconds (smoke tests)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    context = load_context(args.checkpoint, args.metrics, args.digits)
    view = make_view(context)
    view.resize(1200, 760)
    view.show()
    if args.quit_after > 0:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(args.quit_after * 1000), view.close)
    app.aboutToQuit.connect(view.shutdown)
    return app.exec()
