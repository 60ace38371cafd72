"""Receptive fields measured on a network, and the padding arithmetic of its convolutions.

A dependency map is |d activation(i, j) / d input| over the whole image, taken
by autograd on the network itself; the padding helpers give the shapes and
windows that `F.conv2d` on a padded tensor produces.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import PixelCNNError
from engine.layers import GatedResidualBlock, concat_elu, down_shift, right_shift
from engine.model import (
    MaskedPixelCNN,
    ModelConfig,
    TwoStreamPixelCNN,
    build_model,
    with_ones_channel,
)

OUTPUT = "output"


# ---------------------------------------------------------------- stages


def gated_update(block: GatedResidualBlock, x: torch.Tensor, skip=None) -> torch.Tensor:
    """The block's p * sigmoid(q) without the `x +` skip connection.

    Uses the block's own layers, so block(x) == x + gated_update(block, x)
    (a test holds the two together).
    """
    c = block.conv_in(concat_elu(x))
    if block.skip is not None:
        c = c + block.skip(concat_elu(skip))
    c = block.conv_out(block.dropout(concat_elu(c)))
    p, q = c.chunk(2, dim=1)
    return p * torch.sigmoid(q)


def staged_forward(
    model: nn.Module, image: torch.Tensor, residual: bool = True
) -> dict[str, torch.Tensor]:
    """The model's forward pass, keeping every stream after every block.

    Two-stream: "v0"/"h0" after the shifted input layers, "vk"/"hk" after
    block k. Masked: "m0" after the mask-A layer, "mk" after layer k. The last
    entry is "output", the logits. `residual=False` drops every block's skip
    connection (same weights), to show what the skip does for gradients.
    """
    stages = {}
    x = with_ones_channel(image)

    if isinstance(model, TwoStreamPixelCNN):
        v = down_shift(model.v_input(x))
        h = down_shift(model.h_input_above(x)) + right_shift(model.h_input_left(x))
        stages["v0"], stages["h0"] = v, h
        pairs = zip(model.v_blocks, model.h_blocks, strict=True)
        for k, (v_block, h_block) in enumerate(pairs, start=1):
            v = v_block(v) if residual else gated_update(v_block, v)
            h = h_block(h, v) if residual else gated_update(h_block, h, v)
            stages[f"v{k}"], stages[f"h{k}"] = v, h
        stages[OUTPUT] = model.output(concat_elu(h))
        return stages

    if isinstance(model, MaskedPixelCNN):
        h = model.input(x)
        stages["m0"] = h
        for k, layer in enumerate(model.layers, start=1):
            update = layer(model.dropout(F.relu(h)))
            h = h + update if residual else update
            stages[f"m{k}"] = h
        stages[OUTPUT] = model.output(F.relu(h))
        return stages

    raise PixelCNNError(
        f"cannot trace a {type(model).__name__}; load a two-stream or masked PixelCNN."
    )


def stage_name(model: nn.Module, stream: str, block: int) -> str:
    """The stage key for `stream` ("v", "h" or "output") after `block` blocks.

    The masked model has one stack, so "v" and "h" both name it; the block is
    clamped to the model's depth.
    """
    if stream == OUTPUT:
        return OUTPUT
    block = max(0, min(block, model.config.blocks))
    if isinstance(model, MaskedPixelCNN):
        return f"m{block}"
    return f"{stream}{block}"


# ---------------------------------------------------------------- dependency maps


def raster_previous(shape: tuple[int, int], i: int, j: int) -> np.ndarray:
    """True at the pixels strictly before (i, j) in raster order."""
    H, W = shape
    order = np.arange(H * W).reshape(H, W)
    return order < i * W + j


@dataclass(frozen=True)
class FieldCount:
    """How much of the past one output sees, and whether it sees the future."""

    seen: int  # previous pixels with a non-zero gradient
    previous: int  # pixels before (i, j) in raster order
    leaked: int  # pixels at or after (i, j) with a non-zero gradient: must be 0

    @property
    def missed(self) -> int:
        return self.previous - self.seen


def count_field(dependency: np.ndarray, i: int, j: int) -> FieldCount:
    previous = raster_previous(dependency.shape, i, j)
    depends = dependency > 0
    return FieldCount(
        seen=int((depends & previous).sum()),
        previous=int(previous.sum()),
        leaked=int((depends & ~previous).sum()),
    )


class GradientProbe:
    """One forward pass on a reference image, kept for many backward passes.

    Every `dependency_map` call is then one backward pass at batch 1 through
    the part of the graph the stage needs. Use a probe from one thread only.
    """

    def __init__(self, model: nn.Module, reference: np.ndarray):
        self.model = model.eval()
        self.shape = tuple(reference.shape)
        self.image = torch.as_tensor(reference, dtype=torch.float32)[None, None].clone()
        self.image.requires_grad_(True)
        with torch.enable_grad():
            self.stages = staged_forward(self.model, self.image)

    def dependency_map(self, stage: str, i: int, j: int) -> np.ndarray:
        """|d sum_c stage[c, i, j] / d image| as float32 [H, W]."""
        # TODO: a gradient that is exactly zero at this reference (a ReLU shut on every
        # path, possible in the masked model) reads as "not seen"; a union over a few
        # random references would close that gap at a few times the cost.
        activation = self.stages[stage]
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(
                activation[0, :, i, j].sum(), self.image, retain_graph=True, allow_unused=True
            )
        if gradient is None:
            return np.zeros(self.shape, dtype=np.float32)
        return gradient[0, 0].abs().numpy()

    def iter_output_maps(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(i, j, map of the output logit) for every pixel in raster order."""
        H, W = self.shape
        for i in range(H):
            for j in range(W):
                yield i, j, self.dependency_map(OUTPUT, i, j)


def all_output_maps(
    probe: GradientProbe,
    should_stop: Callable[[], bool] = lambda: False,
) -> np.ndarray | None:
    """Every output pixel's map, [H, W, H, W]; None when stopped early."""
    H, W = probe.shape
    maps = np.zeros((H, W, H, W), dtype=np.float32)
    for i, j, dependency in probe.iter_output_maps():
        if should_stop():
            return None
        maps[i, j] = dependency
    return maps


def design_network(
    arch: str,
    blocks: int,
    v_kernel=(2, 3),
    h_kernel=(2, 2),
    first_kernel: int = 7,
    masked_kernel: int = 3,
    channels: int = 16,
    seed: int = 0,
) -> nn.Module:
    """A randomly initialized network of the given shape, for comparing designs.

    Which pixels an output depends on is set by the wiring, not the weights,
    so a narrow random network shows the field of a trained one of that shape.
    """
    config = ModelConfig(
        arch=arch,
        channels=channels,
        blocks=blocks,
        v_kernel=tuple(v_kernel),
        h_kernel=tuple(h_kernel),
        first_kernel=first_kernel,
        masked_kernel=masked_kernel,
    )

    # a private generator state: the caller's random stream stays untouched
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(config).eval()


# ---------------------------------------------------------------- padding arithmetic

PADDING_MODES = ("valid", "same", "down_shifted", "down_right_shifted")


@dataclass(frozen=True)
class Padding:
    top: int
    bottom: int
    left: int
    right: int

    def as_pad(self) -> tuple[int, int, int, int]:
        """The order `F.pad` takes for the last two dimensions."""
        return (self.left, self.right, self.top, self.bottom)


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    # TensorFlow's 'same': out = ceil(size / stride), the odd zero goes after
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def padding_for(mode: str, kernel: tuple[int, int], shape: tuple[int, int], stride: int = 1):
    """Zeros added on each side of a [H, W] input before a valid convolution."""
    kh, kw = kernel
    if mode == "valid":
        return Padding(0, 0, 0, 0)
    if mode == "same":
        top, bottom = _same_padding(shape[0], kh, stride)
        left, right = _same_padding(shape[1], kw, stride)
        return Padding(top, bottom, left, right)
    if stride != 1:
        raise PixelCNNError(f"a {mode.replace('_', '-')} convolution runs at stride 1; set 1.")
    if mode == "down_shifted":
        if kw % 2 == 0:
            raise PixelCNNError(
                f"a down-shifted kernel needs an odd width, got {kw}; choose 1, 3, 5 or 7."
            )
        return Padding(kh - 1, 0, (kw - 1) // 2, (kw - 1) // 2)
    if mode == "down_right_shifted":
        return Padding(kh - 1, 0, kw - 1, 0)
    raise PixelCNNError(f"padding mode '{mode}' is unknown; use one of {PADDING_MODES}.")


def conv_output_size(size: int, k: int, pad_before: int, pad_after: int, stride: int) -> int:
    """floor((i + p_before + p_after - k) / s) + 1 (Dumoulin & Visin, with 2p split in two)."""
    return (size + pad_before + pad_after - k) // stride + 1


def layer_shapes(
    mode: str, kernel: tuple[int, int], shape: tuple[int, int], stride: int = 1, layers: int = 1
) -> list[tuple[tuple[int, int], Padding]]:
    """(input shape, padding) of each stacked layer, then the final output shape."""
    result = []
    for layer in range(layers):
        padding = padding_for(mode, kernel, shape, stride)
        out = (
            conv_output_size(shape[0], kernel[0], padding.top, padding.bottom, stride),
            conv_output_size(shape[1], kernel[1], padding.left, padding.right, stride),
        )
        if min(out) < 1:
            raise PixelCNNError(
                f"layer {layer + 1} gets a {shape[0]}x{shape[1]} input, too small for a "
                f"{kernel[0]}x{kernel[1]} '{mode}' kernel; use a larger input, a smaller "
                "kernel or fewer layers."
            )
        result.append((shape, padding))
        shape = out
    result.append((shape, None))
    return result


def stacked_reach(
    mode: str,
    kernel: tuple[int, int],
    shape: tuple[int, int],
    out_position: tuple[int, int],
    stride: int = 1,
    layers: int = 1,
) -> np.ndarray:
    """Cells of the first layer's padded input that the final output cell reads.

    Walks the windows back layer by layer. A padding cell of a later layer is
    a constant zero, so only real cells pass the dependency on to the layer
    before; the padding of the first layer is kept to be drawn.
    """
    plan = layer_shapes(mode, kernel, shape, stride, layers)
    kh, kw = kernel
    cells = {tuple(out_position)}
    for layer in range(layers - 1, -1, -1):
        (H, W), padding = plan[layer]
        reached = set()
        for r, c in cells:
            for dr in range(kh):
                for dc in range(kw):
                    reached.add((r * stride - padding.top + dr, c * stride - padding.left + dc))
        if layer > 0:
            cells = {(r, c) for r, c in reached if 0 <= r < H and 0 <= c < W}
        else:
            cells = reached

    (H, W), padding = plan[0]
    mask = np.zeros((H + padding.top + padding.bottom, W + padding.left + padding.right), bool)
    for r, c in cells:
        mask[r + padding.top, c + padding.left] = True
    return mask
