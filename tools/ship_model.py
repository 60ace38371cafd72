"""Turn a training run into the model shipped in assets/.

    python tools/ship_model.py --run runs/shipped --data ../shared/data/mnist

Writes assets/pixelcnn.pt (weights, configuration, training options, test
figures; no optimizer state), its ONNX export and step graphs (each checked
against PyTorch), assets/metrics.jsonl, and assets/train-state.pt (the run's
last.pt, so a later session can resume the same run).
"""

import argparse
import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from engine.errors import PixelCNNError  # noqa: E402
from engine.evaluate import evaluate_checkpoint, format_figures  # noqa: E402
from export import incremental, onnx  # noqa: E402

KEEP = ("config", "train", "model", "epoch", "step", "best_validation", "elapsed", "parameters")


def ship(run: Path, assets: Path, data: str | None, limit: int | None) -> dict:
    best = load_checkpoint(run / "best.pt")

    # the shipped file holds what the app and the views need, not Adam's moments
    shipped = {key: best[key] for key in KEEP if key in best}
    target = assets / "pixelcnn.pt"
    save_checkpoint(target, shipped)

    # measure on the fixed-seed test set and record the figures in the file
    result = evaluate_checkpoint(target, data, limit)
    shipped["test"] = {**result["trained"], "digits": result["digits"]}
    shipped["untrained"] = result["untrained"]
    save_checkpoint(target, shipped)

    shutil.copyfile(run / "metrics.jsonl", assets / "metrics.jsonl")
    shutil.copyfile(run / "last.pt", assets / "train-state.pt")

    # the app runs the ONNX file, and samples fast through the step graphs
    exported = target.with_suffix(".onnx")
    data_option = ["--data", data] if data else []
    if onnx.main(["--checkpoint", str(target), "--output", str(exported), *data_option]):
        raise PixelCNNError(f"the ONNX export of {target} failed its check; see above.")
    if incremental.main(["--checkpoint", str(target), "--output", str(exported)]):
        raise PixelCNNError(f"the step graphs of {target} failed their check; see above.")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="runs/shipped")
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--data")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # the exporters' own progress lines (rewrite rules applied, folding skipped) are noise here
    for exporter in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(exporter).setLevel(logging.WARNING)
    try:
        result = ship(Path(args.run), Path(args.assets), args.data, args.limit)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"test NLL on {result['digits']} digits")
    print(format_figures("trained", result["trained"]))
    print(format_figures("untrained", result["untrained"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
