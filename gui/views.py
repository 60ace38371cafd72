"""The explanatory tabs of the studio: receptive field, padding, inspector, logits and residuals.

The main window calls `make_views` once per opened model and adds the tabs.
Run alone, it saves a screenshot of each view:

    python -m gui.views --screenshots docs/screenshots [--checkpoint assets/pixelcnn.pt]
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication, QWidget

from gui.inspector_view import InspectorView
from gui.logits_view import LogitsView
from gui.padding_view import PaddingView
from gui.receptive_field_view import ReceptiveFieldView
from gui.view_context import DEFAULT_CHECKPOINT, DEFAULT_DIGITS, DEFAULT_METRICS, load_context

log = logging.getLogger(__name__)


def make_views(
    checkpoint_path: Path | None, metrics_path: Path | None
) -> list[tuple[str, QWidget]]:
    """(tab title, widget) for each view, all explaining the same loaded network.

    Without a checkpoint (or with one that cannot be read) the views explain a
    fresh network of the default configuration and say so. Every widget has
    `shutdown()`, which stops its worker thread and waits; the views also stop
    themselves when the application quits or the widget is deleted.
    """
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
    # an ONNX file carries no gradients: the views need the torch checkpoint beside it
    if checkpoint_path is not None and checkpoint_path.suffix == ".onnx":
        checkpoint_path = checkpoint_path.with_suffix(".pt")
        if not checkpoint_path.is_file():
            log.info("no %s beside the ONNX model; the views use a fresh network", checkpoint_path)
            checkpoint_path = None
    metrics_path = Path(metrics_path) if metrics_path else None

    context = load_context(checkpoint_path, metrics_path, DEFAULT_DIGITS)
    return [
        ("Receptive field", ReceptiveFieldView(context)),
        ("Padding", PaddingView(context)),
        ("Inspector", InspectorView(context)),
        ("Logits & residuals", LogitsView(context)),
    ]


def _settle(app, widget, timeout_s=60.0):
    # wait for the view's background work, then for pyqtgraph to repaint
    deadline = time.monotonic() + timeout_s
    settled = getattr(widget, "is_settled", lambda: True)
    while time.monotonic() < deadline and not settled():
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def save_screenshots(folder: Path, checkpoint: Path | None, metrics: Path | None) -> list[Path]:
    """Shows each view at a telling setting and saves what it draws."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    views = dict(make_views(checkpoint, metrics))
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def grab(widget, name):
        _settle(app, widget)
        path = folder / name
        widget.grab().save(str(path))
        written.append(path)

    explorer = views["Receptive field"]
    explorer.resize(1500, 900)
    explorer.show()
    explorer.select(20, 14)
    grab(explorer, "rf_explorer.png")
    explorer.set_trace("h", 2)
    grab(explorer, "rf_layers.png")

    padding = views["Padding"]
    padding.resize(1300, 800)
    padding.show()
    padding.configure(7, 9, (2, 3), "down_shifted", 1, 3)
    padding.select(6, 4)
    grab(padding, "padding.png")
    padding.configure(6, 6, (4, 4), "same", 1, 1)
    padding.select(5, 5)
    grab(padding, "padding_same_even.png")

    inspector = views["Inspector"]
    inspector.resize(1400, 860)
    inspector.show()
    grab(inspector, "inspector.png")

    logits = views["Logits & residuals"]
    logits.resize(1500, 900)
    logits.show()
    grab(logits, "logits.png")

    for widget in views.values():
        widget.shutdown()
        widget.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gui.views", description=__doc__)
    parser.add_argument("--screenshots", type=Path, required=True, help="folder for the PNGs")
    shipped = DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None
    parser.add_argument("--checkpoint", type=Path, default=shipped)
    parser.add_argument("--metrics", type=Path, default=DEFAULT_METRICS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    for path in save_screenshots(args.screenshots, args.checkpoint, args.metrics):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
