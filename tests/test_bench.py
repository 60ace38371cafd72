"""The benchmark's smoke run: it times every figure and ends with the summary line.

Runs --quick on tiny models (a cached torch checkpoint and an exported ONNX
file) until the shipped model exists; the figures themselves are not checked.
"""

import io
import re
import warnings

import pytest
import torch

from engine.bench import main
from engine.checkpoint import save_checkpoint

SUMMARY = re.compile(r"^speedup vs naive: \d+\.\dx; cost in batched forward passes: \d+\.\d$")


@pytest.fixture
def checkpoint(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    return path


@pytest.fixture
def exported(tmp_path, tiny_model, checkpoint):
    """The tiny model as an ONNX file under the model contract.

    Written by torch's TorchScript exporter, several times quicker than the
    dynamo one export/onnx.py uses; ONNX Runtime sees the same contract.
    """
    from export.onnx import export_metadata, with_metadata

    graph = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tiny_model,
            (torch.zeros(2, 1, 28, 28),),
            graph,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=18,
        )
    path = tmp_path / "tiny.onnx"
    metadata = export_metadata({}, tiny_model, checkpoint, fp16=False)
    path.write_bytes(with_metadata(graph.getvalue(), metadata))
    return path


def test_quick_bench_ends_with_the_summary_line(checkpoint, capsys):
    assert main(["--model", str(checkpoint), "--quick"]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert SUMMARY.match(lines[-1]), lines[-1]
    assert "CPUs" in lines[0] and "cached" in lines[1]
    assert any(line.startswith("engine sampling") and "incremental" in line for line in lines)


def test_quick_bench_runs_the_exported_model(exported, capsys):
    assert main(["--model", str(exported), "--quick", "--device", "cpu"]) == 0

    lines = capsys.readouterr().out.strip().splitlines()
    assert "onnx" in lines[1]
    assert SUMMARY.match(lines[-1]), lines[-1]


@pytest.mark.parametrize("option", [["--repeats", "0"], ["--digits", "0"], ["--rows", "29"]])
def test_bad_options_exit_2(checkpoint, option, capsys):
    assert main(["--model", str(checkpoint), *option]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_missing_model_exits_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "none.onnx"), "--quick"]) == 2
    assert "does not exist" in capsys.readouterr().err
