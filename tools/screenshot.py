"""Saves a screenshot of the studio in the middle of a completion, for the docs.

Loads a shipped digit, hides its bottom half, starts completing at a speed a
person can follow, and grabs the window after a while; runs without a screen.

    python tools/screenshot.py [--model assets/pixelcnn.onnx] [--out docs/screenshots/complete.png]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/screenshot.py", description=__doc__)
    parser.add_argument("--model", default=str(ROOT / "assets" / "pixelcnn.onnx"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "complete.png"))
    parser.add_argument("--samples", type=int, choices=(1, 4, 9, 16), default=4)
    parser.add_argument("--speed", type=int, default=5, help="speed slider position, 0-7")
    parser.add_argument("--after", type=float, default=8.0, help="seconds of sampling first")
    parser.add_argument("--digit", type=int, default=5, help="seed that picks the digit")
    args = parser.parse_args(argv)

    import numpy as np
    from PySide6 import QtCore

    from engine.masks import bottom_half
    from gui.app import application
    from gui.main_window import MainWindow
    from gui.settings import Settings, open_settings

    app = application()
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(open_settings(Path(scratch) / "settings.ini"))
        window = MainWindow(settings, args.model, "cpu")
        if window.model is None:
            print(f"error: could not open {args.model}", file=sys.stderr)
            return 2
        window.resize(1400, 860)
        window.show()
        panel = window.panel
        panel.samples_box.setCurrentIndex(panel.samples_box.findData(args.samples))
        panel.speed_slider.setValue(args.speed)
        panel.new_seed_box.setChecked(False)
        panel.seed_box.setValue(11)

        def start():
            window.rng = np.random.default_rng(args.digit)
            window.random_digit_action.trigger()
            window.drawing.set_mask(bottom_half())
            window.canvas.refresh()
            panel.complete_action.trigger()

        def grab():
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(args.out)
            window.close()
            app.quit()

        # the timer starts when the first step arrives, so slow starts do not matter
        first_step = []

        def on_step(_report):
            if not first_step:
                first_step.append(True)
                QtCore.QTimer.singleShot(int(args.after * 1000), grab)

        panel.runner.sigStep.connect(on_step)
        QtCore.QTimer.singleShot(300, start)
        app.exec()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
