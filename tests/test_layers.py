"""The causal layers: shifts, shifted and masked convolutions, the gated block.

Each layer's receptive field is read off autograd on one output pixel and
compared with the rectangle or half-window its docstring promises.
"""

import pytest
import torch

from engine.layers import (
    DownRightShiftedConv2d,
    DownShiftedConv2d,
    GatedResidualBlock,
    MaskedConv2d,
    concat_elu,
    down_shift,
    right_shift,
)

SIDE = 9
CENTRE = (4, 4)


def seen_pixels(layer, side=SIDE, at=CENTRE) -> set[tuple[int, int]]:
    """The input pixels whose value reaches output pixel `at` of a 1-channel layer."""
    torch.manual_seed(0)
    with torch.no_grad():
        # positive weights: no two paths can cancel into an accidental zero
        for parameter in layer.parameters():
            parameter.copy_(torch.rand_like(parameter) + 0.1)
    x = torch.rand(1, 1, side, side, requires_grad=True)
    layer(x)[0, 0, at[0], at[1]].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


def rectangle(rows, cols) -> set[tuple[int, int]]:
    return {(r, c) for r in rows for c in cols}


def test_down_shift_moves_rows_down_and_fills_the_top_with_zeros():
    x = torch.arange(12.0).view(1, 1, 3, 4)

    shifted = down_shift(x)

    assert torch.equal(shifted[0, 0, 0], torch.zeros(4))
    assert torch.equal(shifted[0, 0, 1:], x[0, 0, :2])


def test_right_shift_moves_columns_right_and_fills_the_left_with_zeros():
    x = torch.arange(12.0).view(1, 1, 3, 4)

    shifted = right_shift(x)

    assert torch.equal(shifted[0, 0, :, 0], torch.zeros(3))
    assert torch.equal(shifted[0, 0, :, 1:], x[0, 0, :, :3])


def test_concat_elu_doubles_channels_and_keeps_both_signs():
    x = torch.tensor([[-2.0, 0.5]]).view(1, 2, 1, 1)

    y = concat_elu(x)

    assert y.shape == (1, 4, 1, 1)
    expected = torch.nn.functional.elu(torch.tensor([-2.0, 0.5, 2.0, -0.5]))
    assert torch.allclose(y.flatten(), expected)


@pytest.mark.parametrize("kernel", [(2, 3), (1, 3), (3, 5), (2, 1)])
def test_down_shifted_conv_sees_the_rows_above_and_a_centred_window(kernel):
    kh, kw = kernel
    i, j = CENTRE
    layer = DownShiftedConv2d(1, 1, kernel)

    seen = seen_pixels(layer)

    half = (kw - 1) // 2
    assert seen == rectangle(range(i - kh + 1, i + 1), range(j - half, j + half + 1))


@pytest.mark.parametrize("kernel", [(2, 2), (2, 1), (1, 3), (3, 3)])
def test_down_right_shifted_conv_sees_the_rows_above_and_columns_to_the_left(kernel):
    kh, kw = kernel
    i, j = CENTRE
    layer = DownRightShiftedConv2d(1, 1, kernel)

    seen = seen_pixels(layer)

    assert seen == rectangle(range(i - kh + 1, i + 1), range(j - kw + 1, j + 1))


@pytest.mark.parametrize("conv_type", [DownShiftedConv2d, DownRightShiftedConv2d])
def test_shifted_convs_keep_the_image_size(conv_type):
    layer = conv_type(3, 5, (2, 3) if conv_type is DownShiftedConv2d else (2, 2))

    y = layer(torch.rand(2, 3, 7, 11))

    assert y.shape == (2, 5, 7, 11)


def test_down_shifted_conv_refuses_an_even_width():
    with pytest.raises(ValueError, match="odd width"):
        DownShiftedConv2d(1, 1, (2, 2))


@pytest.mark.parametrize("size", [3, 5, 7])
def test_mask_a_sees_the_half_window_before_the_centre_but_not_the_centre(size):
    i, j = CENTRE
    half = size // 2
    layer = MaskedConv2d(1, 1, size, "A")

    seen = seen_pixels(layer)

    rows_above = rectangle(range(i - half, i), range(j - half, j + half + 1))
    left_in_row = rectangle([i], range(j - half, j))
    assert seen == rows_above | left_in_row


@pytest.mark.parametrize("size", [3, 5])
def test_mask_b_also_sees_the_centre(size):
    i, j = CENTRE
    half = size // 2
    layer = MaskedConv2d(1, 1, size, "B")

    seen = seen_pixels(layer)

    rows_above = rectangle(range(i - half, i), range(j - half, j + half + 1))
    left_in_row_and_centre = rectangle([i], range(j - half, j + 1))
    assert seen == rows_above | left_in_row_and_centre


def test_masked_conv_keeps_masked_weights_out_of_the_gradient():
    layer = MaskedConv2d(2, 3, 5, "A")

    layer(torch.rand(1, 2, 6, 6)).sum().backward()

    # the optimizer never moves a weight the mask hides
    hidden = layer.mask.expand_as(layer.weight) == 0
    assert torch.all(layer.weight.grad[hidden] == 0)
    assert torch.any(layer.weight.grad[~hidden] != 0)


@pytest.mark.parametrize(
    "size, mask_type, message", [(4, "A", "odd size"), (3, "C", "'A' or 'B'")]
)
def test_masked_conv_refuses_bad_arguments(size, mask_type, message):
    with pytest.raises(ValueError, match=message):
        MaskedConv2d(1, 1, size, mask_type)


def test_gated_block_is_the_identity_when_its_output_convolution_is_zero():
    torch.manual_seed(0)
    block = GatedResidualBlock(4, DownShiftedConv2d, (2, 3), skip_channels=4)
    with torch.no_grad():
        block.conv_out.conv.weight.zero_()
        block.conv_out.conv.bias.zero_()
    x, skip = torch.rand(2, 4, 5, 5), torch.rand(2, 4, 5, 5)

    assert torch.equal(block(x, skip), x)


def test_gated_block_uses_its_skip_input_through_a_one_by_one_convolution():
    torch.manual_seed(0)
    block = GatedResidualBlock(4, DownRightShiftedConv2d, (2, 2), skip_channels=3)
    x = torch.rand(1, 4, 5, 5)
    skip = torch.rand(1, 3, 5, 5, requires_grad=True)

    out = block(x, skip)
    out[0, :, 2, 2].sum().backward()

    assert out.shape == x.shape
    # a 1x1 skip reaches the output only through the block's own causal window
    reached = {tuple(p) for p in torch.nonzero(skip.grad[0].abs().sum(0)).tolist()}
    assert reached <= rectangle(range(1, 3), range(1, 3))
    assert (2, 2) in reached
