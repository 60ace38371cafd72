"""The explanatory views, offscreen: maps against autograd, padding against F.conv2d.

Networks are tiny so every test stays short; the receptive-field maps are
compared with gradients taken through the model's own forward pass.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PySide6.QtCore import QCoreApplication, QEvent, QPointF, Qt
from test_receptive_field import documented_padding

from engine.checkpoint import save_checkpoint
from engine.receptive_field import OUTPUT, count_field, raster_previous
from gui import view_thread
from gui.inspector_view import InspectorView
from gui.logits_view import LogitsView, digit_logits
from gui.padding_view import IMAGE, IMAGE_READ, PaddingView
from gui.receptive_field_view import FUTURE, MISSED, ReceptiveFieldView
from gui.view_context import ViewContext, drawn_digits
from gui.views import make_views

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 15000


@pytest.fixture
def context(tiny_model):
    digits, names = drawn_digits()
    return ViewContext(
        model=tiny_model,
        config=tiny_model.config,
        source="tiny test network",
        trained=False,
        digits=digits,
        digit_names=names,
    )


@pytest.fixture
def explorer(qtbot, context):
    view = ReceptiveFieldView(context)
    qtbot.addWidget(view)
    view.resize(1200, 700)
    view.show()
    qtbot.waitExposed(view)
    yield view
    view.shutdown()


def cell_point(cells, i, j):
    """The viewport position of the centre of cell (i, j)."""
    return cells.mapFromScene(cells._view.mapViewToScene(QPointF(j + 0.5, i + 0.5)))


def wait_shown(qtbot, view, key, stage, i, j):
    qtbot.waitUntil(lambda: view.panel(key).shown == (stage, i, j), timeout=WAIT_MS)
    return view.panel(key)


def reference_of(view, context):
    return context.digits[view._reference.currentData()]


def autograd_map(model, reference, i, j):
    x = torch.from_numpy(reference)[None, None].requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[0, 0, i, j], x)
    return gradient[0, 0].abs().numpy()


# ---------------------------------------------------------------- the tabs


def test_make_views_without_a_checkpoint_says_the_network_is_fresh(qtbot):
    views = make_views(None, None)
    try:
        assert [title for title, _ in views] == [
            "Receptive field",
            "Padding",
            "Inspector",
            "Logits & residuals",
        ]
        for _, widget in views:
            qtbot.addWidget(widget)
        explorer = views[0][1]
        assert "random weights" in explorer.panel("loaded").title.text()
        assert "no trained network" in explorer.panel("loaded").title.text()
    finally:
        for _, widget in views:
            widget.shutdown()


def test_make_views_explains_the_loaded_checkpoint(qtbot, tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    views = dict(make_views(path, None))
    try:
        for widget in views.values():
            qtbot.addWidget(widget)
        inspector = views["Inspector"]
        assert inspector.total_shown() == sum(p.numel() for p in tiny_model.parameters())
        assert "tiny.pt" in views["Receptive field"].panel("loaded").title.text()
    finally:
        for widget in views.values():
            widget.shutdown()


# ---------------------------------------------------------------- receptive-field explorer


def test_clicked_pixel_map_equals_autograd_on_the_same_network(qtbot, explorer, context):
    cells = explorer.panel("loaded").cells
    qtbot.waitUntil(lambda: cell_point(cells, 27, 27).x() > cell_point(cells, 0, 0).x() + 100)

    qtbot.mouseClick(cells.viewport(), Qt.LeftButton, pos=cell_point(cells, 20, 9))

    panel = wait_shown(qtbot, explorer, "loaded", OUTPUT, 20, 9)
    expected = autograd_map(context.model, reference_of(explorer, context), 20, 9)
    np.testing.assert_allclose(panel.current_map, expected, rtol=1e-6, atol=1e-9)
    assert (expected > 0).sum() > 10


@pytest.mark.parametrize("stream,block", [(OUTPUT, 0), ("v", 1), ("h", 2), ("h", 0)])
def test_nothing_at_or_after_the_pixel_is_ever_shaded(qtbot, explorer, stream, block):
    explorer.set_trace(stream, block)
    for i, j in [(0, 0), (9, 27), (16, 3), (27, 14)]:
        explorer.select(i, j)
        for key in ("loaded", "two_stream", "masked"):
            panel = explorer.panel(key)
            position = (i, j)
            qtbot.waitUntil(
                lambda p=panel, at=position: p.shown is not None and p.shown[1:] == at,
                timeout=WAIT_MS,
            )
            after = ~raster_previous((28, 28), i, j)
            assert (panel.cells.cells[after] == FUTURE).all(), (key, i, j)
            assert count_field(panel.current_map, i, j).leaked == 0


def test_masked_design_shows_its_blind_spot(qtbot, explorer):
    # the default design: 7x7 mask A and five 3x3 mask B layers
    explorer.select(27, 14)

    panel = wait_shown(qtbot, explorer, "masked", OUTPUT, 27, 14)
    count = count_field(panel.current_map, 27, 14)
    assert (count.seen, count.previous) == (129, 770)
    assert (panel.cells.cells == MISSED).sum() == 641
    assert "129" in panel.caption.text()


def test_two_stream_design_sees_more_of_the_past_than_the_masked_one(qtbot, explorer):
    explorer.select(27, 14)
    two_stream = wait_shown(qtbot, explorer, "two_stream", OUTPUT, 27, 14)
    masked = wait_shown(qtbot, explorer, "masked", OUTPUT, 27, 14)
    seen_two = count_field(two_stream.current_map, 27, 14).seen
    assert seen_two > count_field(masked.current_map, 27, 14).seen
    # right above the pixel and to its right: the masked blind spot, seen by two streams
    assert two_stream.current_map[26, 18] > 0 and masked.current_map[26, 18] == 0


def test_layer_slider_traces_the_vertical_stream_after_a_block(qtbot, explorer, context):
    explorer.set_trace("v", 1)
    explorer.select(15, 10)
    panel = wait_shown(qtbot, explorer, "loaded", "v1", 15, 10)

    # the vertical stream after block 1, caught by a hook on the model's own forward
    caught = {}
    hook = context.model.v_blocks[0].register_forward_hook(
        lambda module, args, output: caught.setdefault("v", output)
    )
    x = torch.from_numpy(reference_of(explorer, context))[None, None].requires_grad_(True)
    context.model(x)
    hook.remove()
    (gradient,) = torch.autograd.grad(caught["v"][0, :, 15, 10].sum(), x)
    np.testing.assert_allclose(panel.current_map, gradient[0, 0].abs().numpy(), rtol=1e-6)
    assert panel.current_map[15:].sum() == 0  # the vertical stream sees only rows above


def test_once_the_sweep_has_passed_a_pixel_it_is_a_lookup(qtbot, explorer):
    panel = explorer.panel("loaded")
    qtbot.waitUntil(lambda: panel.output_ready[0, 20], timeout=WAIT_MS)

    explorer.select(0, 20)
    # shown at once, without a round trip to the worker thread
    assert panel.shown == (OUTPUT, 0, 20)


def test_closing_mid_computation_leaves_no_thread_running(qtbot, explorer):
    qtbot.waitUntil(lambda: explorer._thread.is_busy("maps:loaded"), timeout=WAIT_MS)
    assert not explorer.all_measured()

    explorer.close()

    assert view_thread.running_threads() == 0
    assert explorer._thread.isFinished()


def test_deleting_mid_computation_leaves_no_thread_running(qtbot, context):
    view = ReceptiveFieldView(context)
    view.show()
    qtbot.waitUntil(lambda: view._thread.is_busy("maps:loaded"), timeout=WAIT_MS)

    view.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)

    assert view_thread.running_threads() == 0


# ---------------------------------------------------------------- padding views


@pytest.mark.parametrize(
    "mode,shape,kernel,stride,layers",
    [
        ("valid", (7, 6), (3, 3), 1, 1),
        ("valid", (9, 8), (2, 3), 2, 2),
        ("same", (6, 6), (3, 3), 1, 1),
        ("same", (6, 7), (4, 2), 1, 2),
        ("same", (7, 5), (3, 2), 2, 1),
        ("down_shifted", (6, 6), (2, 3), 1, 3),
        ("down_shifted", (5, 8), (3, 5), 1, 1),
        ("down_right_shifted", (6, 6), (2, 2), 1, 2),
        ("down_right_shifted", (4, 9), (3, 1), 1, 1),
    ],
)
def test_padding_view_output_matches_the_formula_and_conv2d(
    qtbot, mode, shape, kernel, stride, layers
):
    view = PaddingView()
    qtbot.addWidget(view)
    view.configure(*shape, kernel, mode, stride, layers)

    x = torch.zeros(1, 1, *shape)
    size = shape
    for _ in range(layers):
        pads = documented_padding(mode, kernel, size, stride)
        formula = tuple(
            (n + before + after - k) // stride + 1
            for n, k, before, after in zip(
                size, kernel, (pads[2], pads[0]), (pads[3], pads[1]), strict=True
            )
        )
        x = F.conv2d(F.pad(x, pads), torch.ones(1, 1, *kernel), stride=stride)
        assert tuple(x.shape[-2:]) == formula
        size = formula
    assert view.output_shape() == size

    # the first layer's padding is drawn as its own cells around the image
    left, right, top, bottom = documented_padding(mode, kernel, shape, stride)
    cells = view._input.cells
    assert cells.shape == (shape[0] + top + bottom, shape[1] + left + right)
    assert np.isin(cells, (IMAGE, IMAGE_READ)).sum() == shape[0] * shape[1]


def test_padding_view_plays_through_the_output_cells(qtbot):
    view = PaddingView()
    qtbot.addWidget(view)
    start = view._position

    view._play.click()
    qtbot.waitUntil(lambda: view._position != start, timeout=3000)
    view._play.click()

    assert view._position == (start[0], start[1] + 1)
    assert not view._timer.isActive()


def test_padding_view_says_why_a_layer_is_impossible(qtbot):
    view = PaddingView()
    qtbot.addWidget(view)
    view.configure(6, 6, (2, 2), "down_shifted")
    assert view.output_shape() is None
    assert "odd width" in view._formula.text()

    view.configure(3, 3, (3, 3), "valid", layers=2)
    assert "too small" in view._formula.text()


# ---------------------------------------------------------------- inspector


def write_metrics(path, epochs):
    with open(path, "a") as log_file:
        for epoch in epochs:
            record = {"epoch": epoch, "step": 10 * epoch, "train_nll": 120.0 - epoch}
            record.update(val_nll=118.0 - epoch, val_bpd=0.2, lr=1e-3)
            log_file.write(json.dumps(record) + "\n")


def test_inspector_total_equals_the_models_parameters(qtbot, context):
    view = InspectorView(context)
    qtbot.addWidget(view)
    assert view.total_shown() == sum(p.numel() for p in context.model.parameters())
    assert view.epochs_plotted() == 0
    assert "no training log" in view._curves_note.text()


def test_inspector_plots_and_follows_the_metrics_log(qtbot, context, tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [1, 2, 3])
    context.metrics_path = path
    view = InspectorView(context)
    qtbot.addWidget(view)
    assert view.epochs_plotted() == 3

    write_metrics(path, [4])
    qtbot.waitUntil(lambda: view.epochs_plotted() == 4, timeout=5000)
    view.shutdown()


# ---------------------------------------------------------------- logits and residuals


def test_logits_view_reports_the_networks_logit_and_both_losses(qtbot, context):
    view = LogitsView(context)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.pixel_report() is not None, timeout=WAIT_MS)

    view.select(12, 15)

    digit = drawn_digits()[0][0]
    report = view.pixel_report()
    expected = digit_logits(context.model, digit)[12, 15]
    assert report["logit"] == pytest.approx(float(expected))
    logit = torch.tensor(float(expected))
    bce = F.binary_cross_entropy_with_logits(logit, torch.tensor(float(digit[12, 15])))
    assert report["logits_loss"] == pytest.approx(bce.item(), rel=1e-6)
    view.shutdown()


def test_logits_view_measures_blocks_with_and_without_skips(qtbot, context):
    view = LogitsView(context)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.residual_result is not None, timeout=WAIT_MS)

    config, with_skip, without_skip, _, _ = view.residual_result
    assert config.blocks == context.config.blocks == len(with_skip) == len(without_skip)
    assert "times the gradient" in view._residual_note.text()
    view.shutdown()
    assert view_thread.running_threads() == 0


def test_closing_the_logits_view_mid_measurement_is_quick(qtbot, context):
    view = LogitsView(context)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.residual_result is not None, timeout=WAIT_MS)
    view._blocks.setValue(24)
    view._channels.setValue(64)
    qtbot.waitUntil(lambda: view._thread.is_busy("residual"), timeout=WAIT_MS)

    started = time.monotonic()
    view.close()

    # the measurement stops at the next block instead of running to its end
    assert time.monotonic() - started < 5
    assert view_thread.running_threads() == 0
    assert view.residual_result[0].blocks == context.config.blocks


# ---------------------------------------------------------------- standalone


# runs each view module as __main__, one after the other, in one fresh interpreter
STANDALONE = """
import runpy, sys
checkpoint, names = sys.argv[1], sys.argv[2:]
for name in names:
    sys.argv = [name, "--checkpoint", checkpoint, "--quit-after", "0.5"]
    try:
        runpy.run_module(name, run_name="__main__")
    except SystemExit as done:
        assert not done.code, (name, done.code)
    print("ran", name, flush=True)
"""


@pytest.mark.slow
def test_each_view_runs_alone_and_quits(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path, {"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}
    )
    modules = [f"gui.{name}" for name in ("receptive_field_view", "padding_view")]
    modules += [f"gui.{name}" for name in ("inspector_view", "logits_view")]

    done = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(path), *modules],
        cwd=ROOT,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [word for m in modules for word in ("ran", m)]
