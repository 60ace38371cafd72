"""Cached sampling in ONNX Runtime is exact and its files round-trip: the row and
pixel graphs give the full network's logits at every step, with numpy caches
and with caches bound in place (IOBinding, here on the CPU provider)."""

import io
import json
import shutil
import warnings

import numpy as np
import onnx
import pytest
import torch
from test_incremental import (
    CONFIGS,
    TOLERANCE,
    H,
    W,
    full_logits,
    make_model,
    sample_cached,
    sample_reordering_at,
)

from engine.errors import PixelCNNError
from engine.incremental import CacheLayout, TorchIncrementalSession
from engine.model import ModelConfig
from export.incremental import (
    BoundOnnxIncrementalSession,
    OnnxIncrementalSession,
    export_incremental,
    incremental_paths,
    open_cached_model,
    open_step_sessions,
)
from export.runtime import create_session

SESSION_KINDS = ("numpy", "bound")


@pytest.fixture(scope="module")
def export_once(tmp_path_factory):
    """Exports each test configuration's graphs at most once per module: torch.export is slow."""
    done = {}

    def export(name: str):
        if name not in done:
            model = make_model(CONFIGS[name])
            done[name] = model, export_incremental(model, tmp_path_factory.mktemp(name) / "tiny")
        return done[name]

    return export


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def exported(request, export_once):
    """(model, StepGraphs) for each test configuration."""
    return export_once(request.param)


def open_session(graphs, config, kind: str):
    row, _ = create_session(graphs.row, "cpu")
    pixel, _ = create_session(graphs.pixel, "cpu", threads=1)
    layout = CacheLayout.of(config)
    if kind == "bound":
        return BoundOnnxIncrementalSession(row, pixel, layout, 2, "cpu")
    return OnnxIncrementalSession(row, pixel, layout, 2)


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_every_step_logit_matches_the_full_network(exported, kind):
    model, graphs = exported
    uniforms = np.random.default_rng(1).random((3, H, W))
    session = open_session(graphs, model.config, kind)
    canvas, step_logits = sample_cached(session, np.zeros((3, 1, H, W), np.float32), uniforms)

    assert np.abs(full_logits(model, canvas) - step_logits).max() < TOLERANCE
    assert 0.05 < canvas.mean() < 0.95


def test_draws_the_same_pixels_as_the_torch_session(exported):
    # the torch session draws what naive sampling draws (tests/test_incremental.py)
    model, graphs = exported
    uniforms = np.random.default_rng(2).random((2, H, W))
    blank = np.zeros((2, 1, H, W), np.float32)

    onnx_canvas, _ = sample_cached(open_session(graphs, model.config, "numpy"), blank, uniforms)
    torch_canvas, _ = sample_cached(TorchIncrementalSession(model, 2), blank, uniforms)
    np.testing.assert_array_equal(onnx_canvas, torch_canvas)


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_completion_keeps_known_pixels(exported, kind):
    model, graphs = exported
    rng = np.random.default_rng(3)
    image = (rng.random((2, 1, H, W)) < 0.3).astype(np.float32)
    known = np.ones((H, W), bool)
    known[9:19, 2:20] = False
    uniforms = rng.random((2, H, W))

    session = open_session(graphs, model.config, kind)
    canvas, step_logits = sample_cached(session, image, uniforms, known)
    reference, _ = sample_cached(TorchIncrementalSession(model, 2), image, uniforms, known)
    np.testing.assert_array_equal(canvas, reference)
    np.testing.assert_array_equal(canvas[:, 0][:, known], image[:, 0][:, known])
    gap = np.abs(full_logits(model, canvas)[:, ~known] - step_logits[:, ~known]).max()
    assert gap < TOLERANCE


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_select_reorders_every_cache(exported, kind):
    model, graphs = exported
    uniforms = np.random.default_rng(4).random((2, H, W))
    session = open_session(graphs, model.config, kind)
    canvas = np.zeros((2, 1, H, W), np.float32)
    logits = np.zeros((2, H, W), np.float32)
    session.start(canvas)

    canvas, logits = sample_reordering_at(
        session, canvas, logits, uniforms, np.array([1, 1, 0]), 20 * W + 9
    )

    assert np.abs(full_logits(model, canvas) - logits).max() < TOLERANCE
    np.testing.assert_array_equal(canvas[0], canvas[1])


def test_files_round_trip(exported):
    model, graphs = exported
    assert graphs.max_difference < TOLERANCE
    assert graphs.row.name == "tiny.row.onnx" and graphs.pixel.name == "tiny.pixel.onnx"
    assert incremental_paths(graphs.row.parent / "tiny.onnx") == (graphs.row, graphs.pixel)

    for path, graph in ((graphs.row, "row"), (graphs.pixel, "pixel")):
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        assert metadata["graph"] == f"incremental-{graph}"
        assert ModelConfig.from_dict(json.loads(metadata["config"])) == model.config

    # the sessions open against the model's configuration, and refuse another
    main = graphs.row.parent / "tiny.onnx"
    sessions = open_step_sessions(main, model.config, "cpu", None, None)
    assert [provider for _, provider in sessions] == ["CPU", "CPU"]
    other = ModelConfig(channels=model.config.channels + 1, blocks=model.config.blocks)
    with pytest.raises(PixelCNNError, match="another model configuration"):
        open_step_sessions(main, other, "cpu", None, None)


def test_pixel_graph_stays_small(exported):
    # every operator costs ONNX Runtime microseconds, 784 times per digit
    model, graphs = exported
    nodes = len(onnx.load(str(graphs.pixel)).graph.node)
    assert nodes <= 18 * model.config.blocks + 12


@pytest.fixture(scope="module")
def main_model_file(tmp_path_factory):
    """A main .onnx file with the metadata export.onnx writes, without its step graphs.

    The TorchScript exporter makes it in a fraction of a second; the file's
    contract is what matters here, not which exporter wrote it.
    """
    from export.onnx import export_metadata, with_metadata

    model = make_model(CONFIGS["c8-b2-default-kernels"])
    path = tmp_path_factory.mktemp("main") / "pixelcnn.onnx"
    graph = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, H, W),),
            graph,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=18,
        )
    metadata = export_metadata({"step": 12}, model, path.with_suffix(".pt"), False)
    path.write_bytes(with_metadata(graph.getvalue(), metadata))
    return model, path


def test_missing_graphs_are_reported(main_model_file, tmp_path):
    alone = tmp_path / "alone.onnx"
    shutil.copyfile(main_model_file[1], alone)
    with pytest.raises(PixelCNNError, match="python -m export.incremental"):
        open_cached_model(alone, "cpu")


def test_cached_model_samples_like_naive_sampling(main_model_file, export_once):
    from engine.sampling import complete

    # the step graphs of the same weights, put beside the main file
    model, path = main_model_file
    _, graphs = export_once("c8-b2-default-kernels")
    for source, target in zip((graphs.row, graphs.pixel), incremental_paths(path), strict=True):
        shutil.copyfile(source, target)
    backend = open_cached_model(path, "cpu")
    assert "cached" in backend.name

    image = (np.random.default_rng(5).random((H, W)) < 0.3).astype(np.uint8)
    known = np.ones((H, W), bool)
    known[14:16] = False
    images = []
    for fast in (True, False):
        steps = complete(backend, image, known, samples=3, seed=3, fast=fast)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                images.append(stop.value.images)
                break
    np.testing.assert_array_equal(images[0], images[1])
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(images[0][:, None].astype(np.float32))).numpy()
    assert (
        np.abs(backend.logits(images[0][:, None].astype(np.float32)) - torch_logits).max() < 1e-4
    )
