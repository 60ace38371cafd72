"""Receptive fields measured by autograd, padding arithmetic against F.conv2d, diagnostics."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.diagnostics import (
    StopRequested,
    activation_curves,
    block_gradient_norms,
    loss_from_logits,
    loss_from_probability,
    pixel_losses,
    read_metrics,
)
from engine.errors import PixelCNNError
from engine.model import ModelConfig, build_model
from engine.receptive_field import (
    OUTPUT,
    PADDING_MODES,
    GradientProbe,
    all_output_maps,
    count_field,
    design_network,
    gated_update,
    layer_shapes,
    padding_for,
    raster_previous,
    stacked_reach,
    staged_forward,
)


def binary_image(shape=(28, 28), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) > 0.7).astype(np.float32)


def autograd_map(model, reference, i, j) -> np.ndarray:
    """|d logit(i, j) / d input| through the model's own forward, independently of the probe."""
    x = torch.from_numpy(reference)[None, None].requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[0, 0, i, j], x)
    return gradient[0, 0].abs().numpy()


# ---------------------------------------------------------------- stages


@pytest.mark.parametrize("arch", ["two_stream", "masked"])
def test_staged_forward_ends_in_the_models_own_logits(arch):
    model = design_network(arch, blocks=3, channels=8)
    x = torch.from_numpy(binary_image())[None, None]
    assert torch.equal(staged_forward(model, x)[OUTPUT], model(x))


def test_gated_update_is_the_block_without_its_skip(tiny_model):
    v = torch.randn(2, 8, 6, 6)
    h = torch.randn(2, 8, 6, 6)
    block = tiny_model.h_blocks[0]
    assert torch.allclose(h + gated_update(block, h, v), block(h, v), atol=1e-6)


def test_dropping_the_skips_changes_the_network(tiny_model):
    x = torch.from_numpy(binary_image())[None, None]
    plain = staged_forward(tiny_model, x, residual=False)[OUTPUT]
    assert not torch.allclose(plain, tiny_model(x))


# ---------------------------------------------------------------- dependency maps


def test_probe_map_equals_autograd_through_the_model(tiny_model):
    reference = binary_image()
    probe = GradientProbe(tiny_model, reference)
    for i, j in [(0, 0), (5, 27), (14, 14), (27, 13)]:
        np.testing.assert_allclose(
            probe.dependency_map(OUTPUT, i, j), autograd_map(tiny_model, reference, i, j)
        )


def test_no_output_depends_on_itself_or_a_later_pixel(tiny_model):
    # the network is fully convolutional: a 16x16 image checks the same wiring faster
    maps = all_output_maps(GradientProbe(tiny_model, binary_image((16, 16))))
    leaks = [count_field(maps[i, j], i, j).leaked for i in range(16) for j in range(16)]
    assert sum(leaks) == 0
    # and the check itself can fail: a plain convolution sees its own pixel
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.from_numpy(binary_image())[None, None].requires_grad_(True)
    (gradient,) = torch.autograd.grad(conv(x)[0, 0, 10, 10], x)
    assert count_field(gradient[0, 0].abs().numpy(), 10, 10).leaked > 0


def test_stopping_the_sweep_returns_none(tiny_model):
    calls = iter(range(10**6))
    result = all_output_maps(
        GradientProbe(tiny_model, binary_image()), should_stop=lambda: next(calls) >= 5
    )
    assert result is None


def test_masked_pixelcnn_has_the_blind_spot():
    # 7x7 mask A + five 3x3 mask B: output (27, 14) sees 129 of its 770 previous pixels
    model = design_network("masked", blocks=5, first_kernel=7, masked_kernel=3)
    dependency = GradientProbe(model, binary_image()).dependency_map(OUTPUT, 27, 14)
    count = count_field(dependency, 27, 14)
    assert (count.seen, count.previous, count.leaked) == (129, 770, 0)
    # the missed pixels include some just above and to the right
    assert dependency[26, 20] == 0 and dependency[26, 14] > 0


def test_vertical_stream_sees_only_rows_above():
    model = design_network("two_stream", blocks=3, channels=8)
    probe = GradientProbe(model, binary_image())
    for block in range(4):
        dependency = probe.dependency_map(f"v{block}", 14, 14)
        assert dependency[14:].sum() == 0
        assert dependency[13].sum() > 0


def test_horizontal_stream_field_grows_with_each_block():
    model = design_network("two_stream", blocks=4, channels=8)
    probe = GradientProbe(model, binary_image())
    seen = [count_field(probe.dependency_map(f"h{k}", 20, 14), 20, 14).seen for k in range(5)]
    assert seen == sorted(seen) and seen[0] < seen[-1]
    # the horizontal stream also sees the pixels to the left in its own row
    assert probe.dependency_map("h0", 20, 14)[20, 13] > 0


def test_raster_previous_counts_every_pixel_before():
    previous = raster_previous((28, 28), 27, 14)
    assert previous.sum() == 27 * 28 + 14
    assert not previous[27, 14:].any()


# ---------------------------------------------------------------- padding arithmetic


def documented_padding(mode, kernel, shape, stride):
    """The documented rules, written out here apart from the engine."""
    kh, kw = kernel
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "down_shifted":
        return ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)
    if mode == "down_right_shifted":
        return (kw - 1, 0, kh - 1, 0)
    pads = []
    for size, k in ((shape[1], kw), (shape[0], kh)):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(PADDING_MODES),
    rows=st.integers(1, 12),
    columns=st.integers(1, 12),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    stride=st.integers(1, 3),
)
def test_output_size_matches_conv2d_on_the_padded_tensor(mode, rows, columns, kh, kw, stride):
    if mode in ("down_shifted", "down_right_shifted"):
        stride = 1
    if mode == "down_shifted" and kw % 2 == 0:
        kw += 1
    pads = documented_padding(mode, (kh, kw), (rows, columns), stride)
    if rows + pads[2] + pads[3] < kh or columns + pads[0] + pads[1] < kw:
        with pytest.raises(PixelCNNError):
            layer_shapes(mode, (kh, kw), (rows, columns), stride)
        return
    expected = F.conv2d(
        F.pad(torch.zeros(1, 1, rows, columns), pads), torch.ones(1, 1, kh, kw), stride=stride
    ).shape[-2:]
    padding = padding_for(mode, (kh, kw), (rows, columns), stride)
    assert padding.as_pad() == pads
    assert layer_shapes(mode, (kh, kw), (rows, columns), stride)[-1][0] == tuple(expected)


def test_same_puts_the_extra_zero_at_bottom_and_right():
    padding = padding_for("same", (4, 2), (6, 6))
    assert (padding.top, padding.bottom, padding.left, padding.right) == (1, 2, 0, 1)


def test_down_shifted_needs_an_odd_width():
    with pytest.raises(PixelCNNError, match="odd width"):
        padding_for("down_shifted", (2, 2), (6, 6))


@pytest.mark.parametrize(
    "mode,kernel,layers,stride",
    [
        ("down_shifted", (2, 3), 3, 1),
        ("down_right_shifted", (2, 2), 2, 1),
        ("same", (3, 3), 2, 1),
        ("valid", (3, 2), 2, 1),
        ("same", (2, 3), 2, 2),
    ],
)
def test_stacked_reach_equals_the_gradient_support(mode, kernel, layers, stride):
    shape = (9, 8)
    plan = layer_shapes(mode, kernel, shape, stride, layers)
    out_rows, out_columns = plan[-1][0]
    position = (out_rows - 1, out_columns // 2)

    x = torch.ones(1, 1, *shape, requires_grad=True)
    y = x
    for _, padding in plan[:-1]:
        y = F.conv2d(F.pad(y, padding.as_pad()), torch.ones(1, 1, *kernel), stride=stride)
    (gradient,) = torch.autograd.grad(y[0, 0, position[0], position[1]], x)

    reach = stacked_reach(mode, kernel, shape, position, stride, layers)
    first = plan[0][1]
    inside = reach[first.top : first.top + shape[0], first.left : first.left + shape[1]]
    np.testing.assert_array_equal(inside, gradient[0, 0].numpy() > 0)


def test_stacked_down_shifted_layers_reach_one_row_and_column_further_each():
    for layers in (1, 2, 4):
        reach = stacked_reach("down_shifted", (2, 3), (12, 12), (10, 6), layers=layers)
        rows, columns = np.nonzero(reach)
        top = 1  # the first layer's padding row
        assert 10 - (rows.min() - top) == layers
        assert (columns.min() - 1, columns.max() - 1) == (6 - layers, 6 + layers)


def test_too_small_an_input_is_a_user_error():
    with pytest.raises(PixelCNNError, match="too small"):
        layer_shapes("valid", (3, 3), (4, 4), layers=2)


# ---------------------------------------------------------------- diagnostics


def test_probability_route_overflows_where_the_logit_route_does_not():
    confident = pixel_losses(20.0, 0.0)
    assert confident["logits_loss"] == pytest.approx(20.0)
    assert math.isinf(confident["probability_loss"])
    assert math.isnan(confident["probability_gradient"])
    assert confident["logits_gradient"] == pytest.approx(1.0)


@pytest.mark.parametrize("logit", [-8.0, -1.5, 0.0, 2.5, 7.0])
@pytest.mark.parametrize("target", [0.0, 1.0])
def test_both_routes_agree_with_the_exact_loss_for_moderate_logits(logit, target):
    # float32 leaves ~1e-7 nats of rounding in either route, harmless next to inf
    report = pixel_losses(logit, target)
    assert report["logits_loss"] == pytest.approx(report["exact_loss"], rel=1e-5, abs=1e-6)
    assert report["probability_loss"] == pytest.approx(report["exact_loss"], rel=1e-3, abs=1e-6)


def test_loss_routes_work_elementwise():
    logits = torch.tensor([-3.0, 0.0, 30.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    stable = loss_from_logits(logits, targets)
    rounded = loss_from_probability(logits, targets)
    assert torch.isfinite(stable).all() and torch.isinf(rounded[2])


def test_block_gradient_norms_match_a_plain_backward_pass():
    config = ModelConfig(channels=8, blocks=3)
    images = torch.from_numpy(binary_image((2, 1, 12, 12)))
    norms, loss = block_gradient_norms(config, images, residual=True, seed=3)

    torch.manual_seed(3)
    model = build_model(config).eval()
    expected_loss = F.binary_cross_entropy_with_logits(model(images), images, reduction="sum") / 2
    expected_loss.backward()
    first = math.sqrt(
        sum(
            float((p.grad**2).sum())
            for b in (model.v_blocks[0], model.h_blocks[0])
            for p in b.parameters()
        )
    )
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    assert norms[0] == pytest.approx(first, rel=1e-5)


def test_without_skips_the_first_blocks_get_far_less_gradient():
    config = ModelConfig(channels=16, blocks=8)
    images = torch.from_numpy(binary_image((4, 1, 16, 16)))
    with_skip, _ = block_gradient_norms(config, images, residual=True)
    without_skip, _ = block_gradient_norms(config, images, residual=False)
    assert without_skip[0] / without_skip[-1] < 1e-3
    assert with_skip[0] / with_skip[-1] > 0.1


def stop_after(checks: int):
    """A should_stop that says yes from its (checks + 1)-th question on."""
    asked = iter(range(10**6))
    return lambda: next(asked) >= checks


# three blocks: six conv_out layers are checked going forward, then six going back
@pytest.mark.parametrize("checks", [1, 6, 11])
def test_block_gradient_norms_stop_when_asked(checks):
    config = ModelConfig(channels=8, blocks=3)
    images = torch.from_numpy(binary_image((2, 1, 12, 12)))
    for residual in (True, False):
        with pytest.raises(StopRequested):
            block_gradient_norms(config, images, residual, should_stop=stop_after(checks))
        finished, _ = block_gradient_norms(config, images, residual, should_stop=stop_after(12))
        expected, _ = block_gradient_norms(config, images, residual)
        np.testing.assert_allclose(finished, expected)


def test_activation_derivatives_come_out_right():
    x = np.array([-2.0, -0.5, 0.5, 2.0])
    curves = activation_curves(x)
    np.testing.assert_allclose(curves["elu_derivative"], [np.exp(-2), np.exp(-0.5), 1, 1])
    np.testing.assert_allclose(curves["relu_derivative"], [0, 0, 1, 1])
    np.testing.assert_allclose(curves["elu"][:2], np.exp(x[:2]) - 1)


def test_metrics_log_skips_a_line_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"epoch": e, "train_nll": 100.0 - e, "val_nll": 99.0 - e}) for e in (2, 1)]
    path.write_text("\n".join(lines) + '\n{"epoch": 3, "train_')
    records = read_metrics(path)
    assert [r["epoch"] for r in records] == [1, 2]


def test_missing_metrics_log_is_a_user_error(tmp_path):
    with pytest.raises(PixelCNNError, match="metrics"):
        read_metrics(tmp_path / "nope.jsonl")
