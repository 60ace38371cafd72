"""The headless command line: completing a picture, sampling, and its exit codes.

End-to-end runs use the tiny trained checkpoint; the error cases use an
untrained one, since they stop before any sampling.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.checkpoint import save_checkpoint
from engine.complete import main
from engine.images import save_png

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def untrained_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "untrained.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    return path


@pytest.fixture
def digit_png(tmp_path):
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[5:23, 13:16] = 1
    return save_png(digit, tmp_path / "digit.png")


def grid_pixels(path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture)


def test_completion_writes_a_grid_with_the_input_first(
    trained_checkpoint, digit_png, tmp_path, capsys
):
    out = tmp_path / "completions.png"
    code = main(
        [str(digit_png), "--model", str(trained_checkpoint), "--mask", "bottom"]
        + ["--samples", "2", "--seed", "0", "--scale", "1", "--out", str(out)]
    )

    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("completion ") == 2 and f"wrote {out}" in printed
    grid = grid_pixels(out)
    assert grid.shape == (2 * 28 + 2, 2 * 28 + 2)  # three cells, two columns

    # the first cell is the input with its hole gray; the completions keep the top
    top = (np.asarray(Image.open(digit_png))[:14] > 127).astype(np.uint8) * 255
    assert (grid[14:28, :28] == 128).all()
    np.testing.assert_array_equal(grid[:14, 30:58], top)
    np.testing.assert_array_equal(grid[30:44, :28], top)


def test_sample_writes_a_grid_of_digits(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "samples.png"
    code = main(
        ["sample", "--n", "2", "--model", str(trained_checkpoint)]
        + ["--seed", "1", "--scale", "2", "--columns", "2", "--out", str(out)]
    )

    assert code == 0
    assert "sampled 2 digits" in capsys.readouterr().out
    assert grid_pixels(out).shape == (56, 2 * 56 + 2)


def test_seeded_runs_write_the_same_grid(untrained_checkpoint, digit_png, tmp_path):
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        arguments = [str(digit_png), "--model", str(untrained_checkpoint), "--mask", "random"]
        arguments += ["--fraction", "0.05", "--samples", "2", "--seed", "3", "--out", str(out)]
        assert main(arguments) == 0
    np.testing.assert_array_equal(grid_pixels(outs[0]), grid_pixels(outs[1]))


def test_mask_png_and_gif(untrained_checkpoint, digit_png, tmp_path, capsys):
    unknown = np.zeros((28, 28), dtype=bool)
    unknown[10:12, 4:24] = True
    mask = save_png(unknown, tmp_path / "mask.png")
    gif = tmp_path / "fill.gif"

    code = main(
        [str(digit_png), "--model", str(untrained_checkpoint), "--mask", str(mask)]
        + ["--mode", "smc", "--candidates", "3", "--samples", "2"]
        + ["--gif", str(gif), "--out", str(tmp_path / "out.png")]
    )
    assert code == 0
    with Image.open(gif) as picture:
        assert picture.n_frames > 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["{digit}", "--model", "{missing}"],
        ["{digit}", "--model", "{digit}"],
        ["{digit}", "--model", "{bad_pt}"],
        ["{missing}", "--model", "{model}"],
        ["{digit}", "--model", "{model}", "--mask", "top"],
        ["{digit}", "--model", "{model}", "--temperature", "0"],
        ["{digit}", "--model", "{model}", "--samples", "0"],
        ["{digit}", "--model", "{model}", "--mask", "random", "--fraction", "2"],
        ["{digit}", "--model", "{model}", "--out", "{digit}/inside-a-file.png"],
        ["sample", "--model", "{model}", "--n", "0"],
        ["sample", "--model", "{model}", "--scale", "0"],
    ],
    ids=[
        "missing-model",
        "png-as-model",
        "corrupt-checkpoint",
        "missing-image",
        "unknown-mask",
        "zero-temperature",
        "zero-samples",
        "bad-fraction",
        "unwritable-out",
        "zero-n",
        "zero-scale",
    ],
)
def test_bad_inputs_exit_2_with_one_error_line(
    arguments, untrained_checkpoint, digit_png, tmp_path, capsys
):
    bad_pt = tmp_path / "bad.pt"
    bad_pt.write_bytes(b"not a checkpoint")
    paths = {
        "digit": digit_png,
        "missing": tmp_path / "missing.onnx",
        "model": untrained_checkpoint,
        "bad_pt": bad_pt,
    }
    arguments = [argument.format(**paths) for argument in arguments]
    # fewer pixels to fill where a run gets as far as sampling
    if arguments[0] != "sample" and "--mask" not in arguments:
        arguments += ["--mask", "random", "--fraction", "0.01"]

    assert main(arguments) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ")


def test_runs_as_a_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "engine.complete", "sample", "--model", str(tmp_path / "no.onnx")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: model ") and "does not exist" in result.stderr
