"""Bad input from a user: damaged MNIST files, foreign checkpoints, options out of
range, ONNX files that break the model contract, pictures that are no digit.

Each must end in PixelCNNError whose message names the file or value, and the
command lines must print one `error:` line and exit with 2, never a traceback.
"""

import contextlib
import copy
import gzip
import importlib
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from engine import data as mnist
from engine import train
from engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from engine.errors import PixelCNNError
from engine.images import MAX_PIXELS, load_digit
from engine.model import ModelConfig, build_model
from export.runtime import open_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--channels", "8", "--blocks", "2", "--threads", "1", "--no-progress"]


# --- MNIST files -------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_test_split(folder: Path, images: bytes, labels: bytes, compress: bool = True) -> Path:
    """The two t10k files of a split, gzip-compressed as MNIST ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, payload in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        name = stem + (".gz" if compress else "")
        (folder / name).write_bytes(gzip.compress(payload) if compress else payload)
    return folder


def good_split(count: int = 10):
    rng = np.random.default_rng(0)
    images = idx_bytes(rng.integers(0, 256, (count, 28, 28)), 0x803)
    labels = idx_bytes(rng.integers(0, 10, count), 0x801)
    return images, labels


def flip_middle(payload: bytes) -> bytes:
    middle = len(payload) // 2
    return (
        payload[:middle]
        + bytes(b ^ 0xFF for b in payload[middle : middle + 8])
        + payload[middle + 8 :]
    )


# each case: how to spoil (images, labels), compress?, which file the message names, and a word
MNIST_DAMAGE = {
    "images truncated": (lambda im, lab: (im[:-100], lab), False, "images", "truncated"),
    "labels cut in the header": (lambda im, lab: (im, lab[:6]), False, "labels", "header"),
    "images with trailing bytes": (
        lambda im, lab: (im + b"\0" * 5, lab),
        False,
        "images",
        "longer",
    ),
    "labels as images": (lambda im, lab: (lab, lab), False, "images", "magic number"),
    "wrong magic": (
        lambda im, lab: (b"\0\0\x08\x01" + im[4:], lab),
        True,
        "images",
        "magic number",
    ),
    "counts disagree": (
        lambda im, lab: (im, idx_bytes(np.zeros(9), 0x801)),
        True,
        "labels",
        "do not belong together",
    ),
    "images not 28x28": (
        lambda im, lab: (idx_bytes(np.zeros((10, 32, 32)), 0x803), lab),
        True,
        "images",
        "not 28x28",
    ),
    "label above nine": (
        lambda im, lab: (im, idx_bytes(np.full(10, 12), 0x801)),
        True,
        "labels",
        "12",
    ),
    "empty images file": (lambda im, lab: (b"", lab), False, "images", "too short"),
}


@pytest.fixture(params=list(MNIST_DAMAGE), ids=list(MNIST_DAMAGE))
def damaged_mnist(request, tmp_path):
    spoil, compress, names, word = MNIST_DAMAGE[request.param]
    images, labels = spoil(*good_split())
    return write_test_split(tmp_path / "mnist", images, labels, compress), names, word


def test_damaged_mnist_is_refused_naming_the_file(damaged_mnist):
    folder, names, word = damaged_mnist

    with pytest.raises(PixelCNNError) as caught:
        mnist.load_split(folder, train=False)

    message = str(caught.value)
    assert f"t10k-{names}-idx" in message
    assert word in message


def test_damaged_mnist_gives_one_error_line_from_the_check_command(damaged_mnist, capsys):
    folder, names, _ = damaged_mnist

    # the check command reads the train split first: give it a good one beside
    images, labels = good_split()
    for stem, payload in (
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
    ):
        (folder / stem).write_bytes(payload)

    assert mnist.main(["check", "--data", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert f"t10k-{names}-idx" in error


@pytest.mark.parametrize("where", [10, 0.5, -9])
def test_corrupt_gzip_is_refused_naming_the_file(tmp_path, where):
    images, labels = good_split()
    folder = write_test_split(tmp_path, images, labels)
    path = folder / "t10k-images-idx3-ubyte.gz"
    payload = path.read_bytes()

    # damage the deflate stream, its CRC trailer, or cut it short
    if isinstance(where, float):
        path.write_bytes(flip_middle(payload))
    elif where < 0:
        path.write_bytes(payload[:-4] + bytes(4))
    else:
        path.write_bytes(payload[: len(payload) - where])

    with pytest.raises(PixelCNNError, match="t10k-images-idx3-ubyte.gz"):
        mnist.load_split(folder, train=False)


def test_truncated_real_mnist_download_is_refused(tmp_path, mnist_path):
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        payload = (mnist_path / stem).read_bytes()
        (tmp_path / stem).write_bytes(payload[: len(payload) * 2 // 3])

    with pytest.raises(PixelCNNError, match="damaged gzip file; download it again|truncated"):
        mnist.load_split(tmp_path, train=False)


def test_header_whose_size_overflows_64_bits_is_refused():
    # 2^31 * 2^31 * 4 wraps to 0 in int64: a 16-byte file must not pass as empty
    header = struct.pack(">IIII", 0x803, 2**31, 2**31, 4)

    with pytest.raises(PixelCNNError, match="truncated"):
        mnist.parse_idx(header, 0x803, "huge.idx")


def test_empty_file_stating_an_impossible_shape_is_refused():
    # no bytes are missing, but no array can have this shape
    header = struct.pack(">IIII", 0x803, 0, 2**32 - 1, 2**32 - 1)

    with pytest.raises(PixelCNNError, match="impossible shape"):
        mnist.parse_idx(header, 0x803, "odd.idx")


def test_file_that_is_a_folder_is_not_taken_for_mnist(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").mkdir()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(good_split()[1])

    with pytest.raises(PixelCNNError, match="has no t10k-images-idx3-ubyte"):
        mnist.load_split(tmp_path, train=False)


# --- checkpoints ----------------------------------------------------------------------


@pytest.fixture
def good_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "good.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    return path


def torch_bytes(value, **options) -> bytes:
    stream = io.BytesIO()
    torch.save(value, stream, **options)
    return stream.getvalue()


def tagged(**entries) -> dict:
    return {"format": "pixelcnn-studio-checkpoint", "version": 1, **entries}


def zip_of_text() -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("notes.txt", "not a tensor in sight")
    return stream.getvalue()


FOREIGN_CHECKPOINTS = {
    "empty": (lambda: b"", "not a readable checkpoint"),
    "random bytes": (lambda: np.random.default_rng(1).bytes(4096), "is not a checkpoint"),
    "text": (lambda: b"weights: none\n", "is not a checkpoint"),
    "zip that is not torch": (zip_of_text, "not a readable checkpoint"),
    "plain torch dict": (
        lambda: torch_bytes({"weight": torch.zeros(3)}),
        "not a PixelCNN studio checkpoint",
    ),
    "plain torch list": (lambda: torch_bytes([1, 2]), "not a PixelCNN studio checkpoint"),
    "newer format": (
        lambda: torch_bytes({**tagged(config={}, model={}), "version": 7}),
        "format version 7",
    ),
    "no weights": (lambda: torch_bytes(tagged(config={})), "no 'model' entry"),
    "configuration not a dict": (lambda: torch_bytes(tagged(config=5, model={})), "configuration"),
    "unknown configuration field": (
        lambda: torch_bytes(tagged(config={"colour": 3}, model={})),
        "unknown fields",
    ),
    "configuration out of range": (
        lambda: torch_bytes(tagged(config={"channels": 0}, model={})),
        "channels",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN_CHECKPOINTS))
def test_foreign_checkpoint_is_refused_naming_the_file(tmp_path, case):
    make, words = FOREIGN_CHECKPOINTS[case]
    path = tmp_path / "foreign.pt"
    path.write_bytes(make())

    with pytest.raises(PixelCNNError) as caught:
        load_model(path)

    assert "foreign.pt" in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.98])
def test_truncated_checkpoint_is_refused_naming_the_file(good_checkpoint, keep):
    payload = good_checkpoint.read_bytes()
    good_checkpoint.write_bytes(payload[: int(len(payload) * keep)])

    with pytest.raises(PixelCNNError, match="good.pt is not a readable checkpoint"):
        load_model(good_checkpoint)


def test_weights_of_another_configuration_do_not_load(tmp_path, tiny_config):
    wider = build_model(ModelConfig(channels=16, blocks=2))
    path = tmp_path / "mixed.pt"
    save_checkpoint(path, {"config": tiny_config.to_dict(), "model": wider.state_dict()})

    with pytest.raises(PixelCNNError, match="mixed.pt does not fit its own configuration"):
        load_model(path)


class WritesAMarker:
    """A pickle payload that creates a file when unpickled: what an attack would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "pack",
    [
        lambda payload: torch_bytes(tagged(config={}, model={"w": payload})),
        lambda payload: torch_bytes({"x": payload}, _use_new_zipfile_serialization=False),
        lambda payload: pickle.dumps({"x": payload}),
    ],
    ids=["torch zip", "torch legacy", "bare pickle"],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, pack):
    marker = tmp_path / "marker"
    path = tmp_path / "crafted.pt"
    path.write_bytes(pack(WritesAMarker(marker)))

    with pytest.raises(PixelCNNError, match="crafted.pt"):
        load_checkpoint(path)
    assert not marker.exists()

    # the same file, unpickled without the weights-only guard, does run the code
    # (a bare pickle runs it before torch finds no magic number and gives up)
    with contextlib.suppress(RuntimeError):
        torch.load(path, weights_only=False)
    assert marker.exists()


# --- options of the training command line ------------------------------------------------


def run_train(argv, capsys) -> tuple[int, str]:
    code = train.main(argv)
    return code, capsys.readouterr().err


OPTIONS_OUT_OF_RANGE = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "5"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--subset", "0"], "--subset"),
    (["--validation-size", "0"], "--validation-size"),
    (["--warmup-steps", "-1"], "--warmup-steps"),
    (["--threads", "0"], "--threads"),
    (["--save-minutes", "0"], "--save-minutes"),
    (["--channels", "0"], "channels"),
    (["--channels", "100000"], "channels"),
    (["--blocks", "-1"], "blocks"),
    (["--dropout", "1.5"], "dropout"),
    (["--dropout", "-0.1"], "dropout"),
]


@pytest.mark.parametrize(
    ("option", "named"), OPTIONS_OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OPTIONS_OUT_OF_RANGE]
)
def test_option_out_of_range_is_one_error_line_and_exit_2(tmp_path, capsys, option, named):
    argv = ["--data", str(tmp_path), "--out", str(tmp_path / "run"), *TINY, *option]

    code, error = run_train(argv, capsys)

    assert code == 2
    assert error.startswith("error: ") and error.count("\n") == 1
    assert named in error
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--validation-size", "70000"], "validation size 70000"),
        (["--batch-size", "4096", "--subset", "100"], "--batch-size"),
    ],
    ids=["validation larger than the data", "batch larger than the subset"],
)
def test_option_that_does_not_fit_the_data_is_an_error(
    mnist_path, tmp_path, capsys, option, named
):
    argv = ["--data", str(mnist_path), "--out", str(tmp_path / "run"), *TINY, *option]

    code, error = run_train(argv, capsys)

    assert code == 2
    assert error.startswith("error: ") and named in error


def test_malformed_number_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        train.main(["--out", str(tmp_path), "--epochs", "many"])

    assert stopped.value.code == 2
    assert "error: argument --epochs: invalid int value: 'many'" in capsys.readouterr().err


def test_out_folder_that_is_a_file_is_an_error(mnist_path, tmp_path, capsys):
    occupied = tmp_path / "a-file"
    occupied.write_text("not a folder")

    code, error = run_train(["--data", str(mnist_path), "--out", str(occupied), *TINY], capsys)

    assert code == 2
    assert error.startswith("error: ") and "a-file" in error
    assert occupied.read_text() == "not a folder"


def test_missing_data_folder_is_an_error(tmp_path, capsys):
    code, error = run_train(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)], capsys)

    assert code == 2
    assert "nowhere" in error and "does not exist" in error


def test_resume_without_a_run_is_an_error(tmp_path, capsys):
    # the folder exists but holds no run; a missing folder is tested in test_run_folder
    (tmp_path / "empty").mkdir()
    code, error = run_train(["--out", str(tmp_path / "empty"), "--resume"], capsys)

    assert code == 2
    assert "last.pt does not exist" in error


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (lambda model: np.random.default_rng(2).bytes(2000), "is not a checkpoint"),
        (lambda model: torch_bytes({"weight": torch.zeros(2)}), "not a PixelCNN studio"),
        # a model saved without its training state (what best.pt of another tool may be)
        (
            lambda model: torch_bytes(
                tagged(config=model.config.to_dict(), model=model.state_dict())
            ),
            "last.pt",
        ),
    ],
    ids=["random bytes", "foreign torch file", "model without a training run"],
)
def test_resume_from_a_bad_last_checkpoint_is_an_error(
    tmp_path, capsys, tiny_model, content, named
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(content(tiny_model))

    code, error = run_train(["--out", str(run), "--resume", *TINY], capsys)

    assert code == 2
    assert error.startswith("error: ") and named in error and "Traceback" not in error


@pytest.fixture(scope="module")
def fresh_run(mnist_path, tmp_path_factory) -> dict:
    """The state a fresh tiny training run would write to last.pt."""
    config = train.TrainConfig(
        data=str(mnist_path),
        out=str(tmp_path_factory.mktemp("fresh")),
        epochs=1,
        batch_size=32,
        subset=64,
        validation_size=100,
        threads=1,
    )
    return train.Trainer(config, ModelConfig(channels=8, blocks=2)).state()


@pytest.fixture
def run_state(fresh_run) -> dict:
    return copy.deepcopy(fresh_run)


def test_resume_with_weights_that_do_not_fit_is_an_error(run_state, tmp_path, capsys):
    run_state["model"] = build_model(ModelConfig(channels=16, blocks=2)).state_dict()
    run = tmp_path / "run"
    save_checkpoint(run / "last.pt", run_state)

    code, error = run_train(["--out", str(run), "--resume", *TINY], capsys)

    assert code == 2
    assert error.startswith("error: ") and "size mismatch" in error


def test_second_run_into_the_same_folder_keeps_the_first(run_state, tmp_path, capsys):
    run = tmp_path / "run"
    save_checkpoint(run / "last.pt", run_state)
    before = (run / "last.pt").read_bytes()

    code, error = run_train(["--out", str(run), *TINY], capsys)

    assert code == 2
    assert "--resume" in error
    assert (run / "last.pt").read_bytes() == before


def test_resume_of_a_damaged_training_state_is_an_error(run_state, tmp_path, capsys):
    del run_state["optimizer"]
    run = tmp_path / "run"
    save_checkpoint(run / "last.pt", run_state)

    code, error = run_train(["--out", str(run), "--resume", *TINY], capsys)

    assert code == 2
    assert error.startswith("error: ") and "'optimizer'" in error


def test_real_command_line_prints_no_traceback(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-m", "engine.train", "--out", str(tmp_path), "--epochs", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert finished.returncode == 2
    assert finished.stderr == "error: --epochs must be at least 1, got 0.\n"


# --- ONNX files ---------------------------------------------------------------------------


def onnx_file(
    path: Path,
    input_name: str = "image",
    shape=("N", 1, 28, 28),
    element=TensorProto.FLOAT,
    output_name: str = "logits",
) -> Path:
    """A one-node model (a cast to float32) with the given input; valid ONNX either way."""
    source = helper.make_tensor_value_info(input_name, element, list(shape))
    target = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(shape))
    node = helper.make_node("Cast", [input_name], [output_name], to=TensorProto.FLOAT)
    graph = helper.make_graph([node], "contract", [source], [target])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_contract_model_opens(tmp_path):
    backend = open_model(onnx_file(tmp_path / "ok.onnx"), device="cpu")

    images = np.ones((2, 1, 28, 28), dtype=np.float32)
    assert backend.logits(images).shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"input_name": "pixels"}, "'pixels'"),
        ({"output_name": "probabilities"}, "'logits'"),
        ({"shape": ("N", 1, 32, 32)}, "[N, 1, 32, 32]"),
        ({"shape": ("N", 3, 28, 28)}, "[N, 3, 28, 28]"),
        ({"shape": ("N", 28, 28)}, "shape"),
        ({"shape": (1, 1, 28, 28)}, "fixed batch of 1"),
        ({"element": TensorProto.DOUBLE}, "tensor(double)"),
        ({"element": TensorProto.UINT8}, "tensor(uint8)"),
    ],
    ids=[
        "input name",
        "output name",
        "image size",
        "channels",
        "rank",
        "fixed batch",
        "float64",
        "uint8",
    ],
)
def test_onnx_model_breaking_the_contract_is_refused(tmp_path, changes, named):
    path = onnx_file(tmp_path / "odd.onnx", **changes)

    with pytest.raises(PixelCNNError) as caught:
        open_model(path, device="cpu")

    assert "odd.onnx" in str(caught.value) and named in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        lambda good: b"",
        lambda good: b"ir_version: 8\n",
        lambda good: np.random.default_rng(3).bytes(3000),
        lambda good: good[: len(good) // 2],
        lambda good: torch_bytes({"weight": torch.zeros(3)}),
        lambda good: gzip.compress(good),
    ],
    ids=["empty", "text", "random bytes", "truncated", "a torch file", "gzip of onnx"],
)
def test_file_that_is_not_onnx_is_refused_naming_it(tmp_path, content):
    good = onnx_file(tmp_path / "good.onnx").read_bytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(content(good))

    with pytest.raises(PixelCNNError, match="model.onnx"):
        open_model(path, device="cpu")


def test_missing_onnx_file_says_how_to_make_one(tmp_path):
    with pytest.raises(PixelCNNError, match="python -m export.onnx"):
        open_model(tmp_path / "absent.onnx", device="cpu")


# --- pictures -----------------------------------------------------------------------------


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header states a size, with one tiny compressed row of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def picture_bytes(mode: str, size=(40, 30), format="PNG", fill=None) -> bytes:
    picture = Image.new(mode, size) if fill is None else Image.new(mode, size, fill)
    stream = io.BytesIO()
    picture.save(stream, format=format)
    return stream.getvalue()


BAD_PICTURES = {
    "empty": (lambda: b"", "empty"),
    "text": (lambda: b"a digit, honestly\n", "not an image"),
    "random bytes": (lambda: np.random.default_rng(4).bytes(5000), "not an image"),
    "a torch file": (lambda: torch_bytes({"w": torch.zeros(3)}), "not an image"),
    "huge by its header": (lambda: png_header_claiming(100_000, 100_000), "megapixels"),
    "just above the limit": (
        lambda: png_header_claiming(MAX_PIXELS // 1000 + 1, 1000),
        "megapixels",
    ),
    "no pixels": (lambda: png_header_claiming(0, 10), "digit.png"),
    "truncated png": (lambda: picture_bytes("L", (200, 200), fill=90)[:120], "digit.png"),
    "truncated jpeg": (
        lambda: picture_bytes("RGB", (200, 200), "JPEG", (10, 200, 30))[:400],
        "digit.png",
    ),
    "LAB mode": (lambda: picture_bytes("LAB", format="TIFF"), "'LAB'"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", list(BAD_PICTURES))
def test_picture_that_is_no_digit_is_refused_naming_the_file(tmp_path, case):
    make, words = BAD_PICTURES[case]
    path = tmp_path / "digit.png"
    path.write_bytes(make())

    with pytest.raises(PixelCNNError) as caught:
        load_digit(path)

    assert "digit.png" in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize(
    ("mode", "format"),
    [
        ("1", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("CMYK", "TIFF"),
        ("YCbCr", "TIFF"),
        ("PA", "TIFF"),
    ],
)
def test_picture_of_an_unusual_mode_loads_as_a_binary_digit(tmp_path, mode, format):
    # a bar of ink on a blank picture, drawn in the mode's own values
    gray = np.zeros((30, 40), dtype=np.uint8)
    gray[5:25, 18:22] = 255
    picture = Image.fromarray(gray).convert(mode)
    path = tmp_path / f"digit.{format.lower()}"
    picture.save(path, format=format)

    digit = load_digit(path)

    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    assert set(np.unique(digit)) <= {0, 1}


def test_missing_picture_is_refused_naming_it(tmp_path):
    with pytest.raises(PixelCNNError, match="nothing.png does not exist"):
        load_digit(tmp_path / "nothing.png")


def test_folder_given_as_a_picture_is_refused(tmp_path):
    with pytest.raises(PixelCNNError, match="does not exist"):
        load_digit(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_picture_is_refused_naming_it(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(picture_bytes("L"))
    path.chmod(0)

    with pytest.raises(PixelCNNError, match="locked.png"):
        load_digit(path)


# --- the other command lines, given a file that is no checkpoint -------------------------


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("engine.evaluate", ["--checkpoint", "{bad}"]),
        ("engine.model", ["--checkpoint", "{bad}", "--summary"]),
        ("export.onnx", ["--checkpoint", "{bad}", "--output", "{out}"]),
    ],
)
def test_command_lines_report_a_foreign_checkpoint_in_one_line(tmp_path, capsys, module, argv):
    bad = tmp_path / "downloaded.pt"
    bad.write_bytes(np.random.default_rng(5).bytes(3000))
    out = tmp_path / "model.onnx"
    entry = importlib.import_module(module).main

    code = entry([a.format(bad=bad, out=out) for a in argv])

    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: ") and error.count("\n") == 1 and "downloaded.pt" in error
    assert not out.exists()
