"""The layer vocabulary of causal image models.

Shifted convolutions and gated residual blocks follow PixelCNN++ (Salimans
et al., 2017); masked convolutions follow PixelRNN (van den Oord et al., 2016).
Every layer maps [B,C,H,W] to [B,C',H,W].
"""

import torch
import torch.nn.functional as F
from torch import nn


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Moves every row one down: a zero row on top, the last row dropped."""
    return F.pad(x[:, :, :-1, :], (0, 0, 1, 0))


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Moves every column one right: a zero column on the left, the last dropped."""
    return F.pad(x[:, :, :, :-1], (1, 0, 0, 0))


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """elu(concat(x, -x)) on channels: keeps both signs, doubles the channels."""
    return F.elu(torch.cat((x, -x), dim=1))


class DownShiftedConv2d(nn.Module):
    """Output (i, j) sees rows i-kh+1..i and columns j-(kw-1)/2..j+(kw-1)/2.

    Pads kh-1 rows on top and (kw-1)/2 columns on each side, then runs a
    valid convolution, so nothing below row i reaches row i.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel=(2, 3)):
        super().__init__()
        kh, kw = kernel
        if kw % 2 == 0:
            raise ValueError(f"a down-shifted kernel needs an odd width, got {kw}")
        self.kernel = (kh, kw)
        self.padding = ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)  # left, right, top, bottom
        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel)

    def forward(self, x):
        return self.conv(F.pad(x, self.padding))


class DownRightShiftedConv2d(nn.Module):
    """Output (i, j) sees rows i-kh+1..i and columns j-kw+1..j."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(2, 2)):
        super().__init__()
        kh, kw = kernel
        self.kernel = (kh, kw)
        self.padding = (kw - 1, 0, kh - 1, 0)
        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel)

    def forward(self, x):
        return self.conv(F.pad(x, self.padding))


class GatedResidualBlock(nn.Module):
    """x + p * sigmoid(q), where (p, q) come from two convolutions of concat_elu(x).

    `skip_channels` > 0 adds a 1x1 convolution of a second input (the
    vertical stream, for a block of the horizontal stream).
    """

    def __init__(self, channels, conv_type, kernel, skip_channels=0, dropout=0.0):
        super().__init__()
        self.conv_in = conv_type(2 * channels, channels, kernel)
        self.skip = nn.Conv2d(2 * skip_channels, channels, 1) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv_type(2 * channels, 2 * channels, kernel)

    def forward(self, x, skip=None):
        c = self.conv_in(concat_elu(x))
        if self.skip is not None:
            c = c + self.skip(concat_elu(skip))
        c = self.conv_out(self.dropout(concat_elu(c)))

        # the gate decides, per channel and pixel, how much of p gets through
        p, q = c.chunk(2, dim=1)
        return x + p * torch.sigmoid(q)


class MaskedConv2d(nn.Conv2d):
    """A square convolution whose weights are zero at and after the centre.

    Mask 'A' also hides the centre pixel (first layer: a pixel must not see
    itself); mask 'B' lets a layer see its own position's earlier features.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type):
        if kernel_size % 2 == 0:
            raise ValueError(f"a masked kernel needs an odd size, got {kernel_size}")
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask type must be 'A' or 'B', got {mask_type!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask_type = mask_type
        centre = kernel_size // 2
        mask = torch.ones(kernel_size, kernel_size)
        mask[centre, centre + (mask_type == "B") :] = 0
        mask[centre + 1 :, :] = 0
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)
