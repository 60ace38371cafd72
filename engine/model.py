"""The two architectures behind the model contract, and their parameter summary.

Both map binary images [N,1,H,W] to one Bernoulli logit per pixel, where the
logit of (i, j) depends only on pixels before (i, j) in raster order.

    python -m engine.model --summary [--arch masked] [--channels 48] [--blocks 5]
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ARCHITECTURES, ModelConfig
from engine.errors import PixelCNNError
from engine.layers import (
    DownRightShiftedConv2d,
    DownShiftedConv2d,
    GatedResidualBlock,
    MaskedConv2d,
    concat_elu,
    down_shift,
    right_shift,
)


def with_ones_channel(x: torch.Tensor) -> torch.Tensor:
    """Appends a channel of ones, so padding zeros differ from image zeros."""
    return torch.cat((x, torch.ones_like(x[:, :1])), dim=1)


class TwoStreamPixelCNN(nn.Module):
    """Vertical and horizontal stacks of shifted convolutions, without a blind spot.

    The vertical stream at (i, j) sees rows above i; the horizontal stream sees
    the row so far and receives the vertical stream at every block.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        C = config.channels

        # the one-time input shift makes the first layer strictly causal
        self.v_input = DownShiftedConv2d(2, C, (2, 3))
        self.h_input_above = DownShiftedConv2d(2, C, (1, 3))
        self.h_input_left = DownRightShiftedConv2d(2, C, (2, 1))

        self.v_blocks = nn.ModuleList(
            GatedResidualBlock(C, DownShiftedConv2d, config.v_kernel, dropout=config.dropout)
            for _ in range(config.blocks)
        )
        self.h_blocks = nn.ModuleList(
            GatedResidualBlock(
                C, DownRightShiftedConv2d, config.h_kernel, skip_channels=C, dropout=config.dropout
            )
            for _ in range(config.blocks)
        )
        self.output = nn.Conv2d(2 * C, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = with_ones_channel(image)
        v = down_shift(self.v_input(x))
        h = down_shift(self.h_input_above(x)) + right_shift(self.h_input_left(x))
        for v_block, h_block in zip(self.v_blocks, self.h_blocks, strict=True):
            v = v_block(v)
            h = h_block(h, v)
        return self.output(concat_elu(h))


class MaskedPixelCNN(nn.Module):
    """The classic PixelCNN: a mask-A convolution, then residual mask-B layers.

    Its receptive field has a blind spot above and to the right of each pixel.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        C = config.channels
        self.input = MaskedConv2d(2, C, config.first_kernel, "A")
        self.layers = nn.ModuleList(
            MaskedConv2d(C, C, config.masked_kernel, "B") for _ in range(config.blocks)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Conv2d(C, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.input(with_ones_channel(image))
        for layer in self.layers:
            h = h + layer(self.dropout(F.relu(h)))
        return self.output(F.relu(h))


def build_model(config: ModelConfig) -> nn.Module:
    if config.arch == "masked":
        return MaskedPixelCNN(config)
    return TwoStreamPixelCNN(config)


def conv_layers(model: nn.Module):
    """(name, layer, kind, in, out, kernel) for every convolution, in order."""
    shifted = (DownShiftedConv2d, DownRightShiftedConv2d)
    inner = {id(m.conv) for m in model.modules() if isinstance(m, shifted)}
    for name, module in model.named_modules():
        if isinstance(module, shifted):
            conv = module.conv
            yield (
                name,
                module,
                type(module).__name__,
                conv.in_channels,
                conv.out_channels,
                module.kernel,
            )
        elif isinstance(module, nn.Conv2d) and id(module) not in inner:
            kind = (
                f"MaskedConv2d({module.mask_type})"
                if isinstance(module, MaskedConv2d)
                else "Conv2d"
            )
            yield name, module, kind, module.in_channels, module.out_channels, module.kernel_size


def conv_parameter_count(in_channels: int, out_channels: int, kernel) -> int:
    """Closed form for a biased convolution: weights plus one bias per output.

    A mask zeroes weights but does not remove them, so the count is the same.
    """
    kh, kw = kernel
    return in_channels * out_channels * kh * kw + out_channels


def layer_summary(model: nn.Module) -> list[dict]:
    rows = []
    for name, layer, kind, c_in, c_out, kernel in conv_layers(model):
        rows.append(
            {
                "name": name,
                "type": kind,
                "kernel": tuple(kernel),
                "in": c_in,
                "out": c_out,
                "params": sum(p.numel() for p in layer.parameters()),
                "closed_form": conv_parameter_count(c_in, c_out, kernel),
            }
        )
    return rows


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def format_summary(model: nn.Module) -> str:
    rows = layer_summary(model)
    width = max(len(r["name"]) for r in rows)
    lines = [
        f"{'layer':<{width}}  {'type':<24} {'kernel':>7} {'in':>5} {'out':>5} "
        f"{'params':>9} {'closed form':>12}"
    ]
    for r in rows:
        kernel = "x".join(map(str, r["kernel"]))
        lines.append(
            f"{r['name']:<{width}}  {r['type']:<24} {kernel:>7} {r['in']:>5} {r['out']:>5} "
            f"{r['params']:>9,} {r['closed_form']:>12,}"
        )
    lines.append(f"total parameters: {count_parameters(model):,}")
    return "\n".join(lines)


def main(argv=None) -> int:
    defaults = ModelConfig()
    parser = argparse.ArgumentParser(prog="python -m engine.model", description=__doc__)
    parser.add_argument("--summary", action="store_true", help="print the per-layer table")
    parser.add_argument("--checkpoint", help="summarize this checkpoint's model instead")
    parser.add_argument("--arch", choices=ARCHITECTURES, default=defaults.arch)
    parser.add_argument("--channels", type=int, default=defaults.channels)
    parser.add_argument("--blocks", type=int, default=defaults.blocks)
    args = parser.parse_args(argv)

    try:
        if args.checkpoint:
            from engine.checkpoint import load_model

            model, _ = load_model(args.checkpoint)
        else:
            config = ModelConfig(arch=args.arch, channels=args.channels, blocks=args.blocks)
            model = build_model(config)
    except PixelCNNError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.summary:
        print(format_summary(model))
    else:
        print(
            f"{model.config.arch} PixelCNN, {count_parameters(model):,} parameters "
            "(--summary for the per-layer table)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
