"""PixelCNN studio: draw or mask a digit and watch a PixelCNN complete it pixel by pixel.

    python main.py [--model assets/pixelcnn.onnx] [--device auto|cpu|cuda]

--model takes an ONNX file or a torch checkpoint (.pt); no download,
training or GPU is needed with the model shipped in assets/.
"""

import argparse
import logging
import sys

from gui.model_loader import DEFAULT_MODEL, DEVICES


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python main.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="an .onnx or .pt file")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs")
    parser.add_argument(
        "--settings", help="an INI file for the settings instead of the user's own"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="load a shipped digit, mask its bottom half and start completing",
    )
    parser.add_argument("--quit-after", type=int, metavar="MS", help="close after MS ms (tests)")
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )

    from gui.app import run

    return run(args.model, args.device, args.settings, args.quit_after, args.demo)


if __name__ == "__main__":
    sys.exit(main())
