"""Exact cached sampling for the two-stream PixelCNN: a row step per row, a pixel step per pixel.

After "Fast Generation for Convolutional Autoregressive Models" (Ramachandran
et al., 2017): every layer keeps the rows and columns of its input that later
positions read, so a pixel costs one position per layer instead of a full pass,
and the logits equal the full network's up to float rounding.
"""

import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.backend import TorchBackend
from engine.errors import PixelCNNError
from engine.layers import concat_elu
from engine.model import TwoStreamPixelCNN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheLayout:
    """The shapes of every cache, for one network and image size.

    C channels, K blocks and D = 2C, the depth of every convolution input
    after concat_elu. The horizontal stream has L = 2K convolutions (two per
    block); one column of its cache holds all L inputs at one pixel, block
    by block: [conv_in of block 0, conv_out of block 0, conv_in of block 1, ...].

    - v_ring [v_rows, N, K, 2, D, W]: the vertical stream's convolution
      inputs for the last v_rows rows, row r in slot r % v_rows.
    - h_ring [h_rows, W + kw - 1, N, L*D]: the horizontal stream's
      convolution inputs, one row per slot, column j at j + kw - 1; the first
      kw - 1 columns stay zero, the padding of a down-right-shifted conv.
    - above [W, N, C + 3KC]: what row i's pixels take from the rows above,
      per column: the first layer's input, then per block the conv_in
      pre-activation (C) and the conv_out pre-activation (2C).
    """

    channels: int
    blocks: int
    v_kernel: tuple[int, int]
    h_kernel: tuple[int, int]
    height: int = 28
    width: int = 28

    @classmethod
    def of(cls, config, height: int = 28, width: int = 28) -> "CacheLayout":
        return cls(
            config.channels,
            config.blocks,
            tuple(config.v_kernel),
            tuple(config.h_kernel),
            height,
            width,
        )

    @property
    def depth(self) -> int:
        return 2 * self.channels

    @property
    def column_size(self) -> int:
        return 2 * self.blocks * self.depth

    @property
    def above_size(self) -> int:
        return self.channels + 3 * self.blocks * self.channels

    @property
    def v_rows(self) -> int:
        return self.v_kernel[0]

    @property
    def h_rows(self) -> int:
        return self.h_kernel[0]

    @property
    def context(self) -> int:
        """Columns left of a pixel that its horizontal convolutions read."""
        return self.h_kernel[1] - 1

    def v_ring_shape(self, batch: int) -> tuple:
        return (self.v_rows, batch, self.blocks, 2, self.depth, self.width)

    def h_ring_shape(self, batch: int) -> tuple:
        return (self.h_rows, self.width + self.context, batch, self.column_size)

    def above_shape(self, batch: int) -> tuple:
        return (self.width, batch, self.above_size)

    @staticmethod
    def ring_order(rows: int, i: int) -> np.ndarray:
        """Slots of rows i-rows+1 .. i-1, oldest first; rows above the image map
        to slots not yet written, which hold zeros, the convolution padding."""
        return np.array([r % rows for r in range(i - rows + 1, i)], dtype=np.int64)


def check_two_stream(model: nn.Module) -> None:
    if not isinstance(model, TwoStreamPixelCNN):
        raise PixelCNNError(
            f"cached sampling needs the two-stream model, not {type(model).__name__}; "
            "sample it with full forward passes (fast=False)."
        )
    if model.config.blocks < 1:
        raise PixelCNNError(
            "cached sampling needs a model with at least one gated block; sample a "
            "0-block model with full forward passes (fast=False)."
        )


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Runs torch on `count` threads inside the block (None: unchanged), then restores.

    The steps are many small operators: a second thread saves little, and on
    a busy CPU each threaded operator can wait milliseconds at its barrier
    (measured here beside a training run: a [16,192]x[192,96] product took
    23 us on one thread and 2.3 ms on two; a row step of the 48-channel
    model 59 ms and 1.2 s).
    """
    threads = torch.get_num_threads()
    if count is None or count == threads:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gate(c: torch.Tensor) -> torch.Tensor:
    """p * sigmoid(q) for (p, q) the two halves of c's channels."""
    p, q = c.chunk(2, dim=1)
    return p * torch.sigmoid(q)


class RowStep(nn.Module):
    """Everything row i needs from rows above it, for the whole row at once.

    The vertical stream at row i depends only on image rows < i, so its whole
    row is computed here. The horizontal stream's convolutions at row i read
    rows i-kh+1 .. i: the part from rows above, plus biases and the skip
    input from the vertical stream, is summed here for every column, leaving
    the pixel step only the current row's taps.
    """

    def __init__(self, model: TwoStreamPixelCNN):
        super().__init__()
        check_two_stream(model)
        self.layout = CacheLayout.of(model.config)
        C, K = model.config.channels, model.config.blocks
        kh, _ = model.config.h_kernel
        self.v_pad = (model.config.v_kernel[1] - 1) // 2

        # the first layer, whose kernel sizes the model fixes; of the left conv, the
        # tap on row i-1 runs here, the tap on row i per pixel
        self.v_input = model.v_input.conv
        self.h_input_above = model.h_input_above.conv
        left = model.h_input_left.conv
        self.register_buffer("left_above_weight", left.weight[:, :, :1].detach().clone())
        # on row i itself, the ones channel and the bias are known in advance
        self.register_buffer("left_const", (left.bias + left.weight[:, 1, 1, 0]).detach().clone())

        # the vertical stream runs the model's own convolutions on the cached rows
        self.v_convs = nn.ModuleList(
            nn.ModuleList((block.conv_in.conv, block.conv_out.conv)) for block in model.v_blocks
        )

        # the horizontal stream's K blocks as grouped convolutions over the rows above
        h_blocks = model.h_blocks
        conv_in = [block.conv_in.conv for block in h_blocks]
        conv_out = [block.conv_out.conv for block in h_blocks]
        self.register_buffer("skip_weight", torch.cat([b.skip.weight for b in h_blocks]).detach())
        # the skip conv's bias adds to conv_in's pre-activation like conv_in's own
        in_bias = torch.cat([b.skip.bias + c.bias for b, c in zip(h_blocks, conv_in, strict=True)])
        self.register_buffer("in_bias", in_bias.detach())
        self.register_buffer("out_bias", torch.cat([conv.bias for conv in conv_out]).detach())
        if kh > 1:
            in_top = torch.cat([conv.weight[:, :, : kh - 1] for conv in conv_in])
            out_top = torch.cat([conv.weight[:, :, : kh - 1] for conv in conv_out])
            self.register_buffer("in_top_weight", in_top.detach())  # [K*C, D, kh-1, kw]
            self.register_buffer("out_top_weight", out_top.detach())  # [K*2C, D, kh-1, kw]
        self.channels, self.blocks = C, K

    def forward(self, pixel_rows, v_ring, v_order, h_ring, h_order):
        """pixel_rows [N, 2, 2, W]: image rows i-2 and i-1 as (pixel, ones), zeros above
        the image. Returns v_row [N, K, 2, D, W] (this row's vertical convolution
        inputs, for the ring) and above [W, N, C + 3KC]."""
        C, K = self.channels, self.blocks
        N, W = pixel_rows.shape[0], pixel_rows.shape[3]

        # down_shift: row i sees only rows < i, and the first row gets zeros,
        # not the bias; the ones channel of row i-1 says whether it exists
        exists = pixel_rows[:, 1:2, 1:2, :1]  # [N, 1, 1, 1]
        row_above = pixel_rows[:, :, 1:2]  # [N, 2, 1, W]
        v = exists * self.v_input(F.pad(pixel_rows, (1, 1, 0, 0)))  # [N, C, 1, W]
        h_above = exists * self.h_input_above(F.pad(row_above, (1, 1, 0, 0)))
        h_left = F.conv2d(row_above, self.left_above_weight) + self.left_const[:, None, None]
        # [N, C, 1, W] each

        # right_shift: column j takes the left conv of column j-1, column 0 nothing
        h_first = h_above + F.pad(h_left[..., :-1], (1, 0))  # [N, C, 1, W]

        # vertical blocks; each convolution reads the cached rows above, then this one
        v_rows = self.layout.v_rows
        if v_rows > 1:
            history = v_ring.index_select(0, v_order)  # [kv-1, N, K, 2, D, W]
            history = history.permute(1, 2, 3, 4, 0, 5)  # [N, K, 2, D, kv-1, W]
        v_inputs, skip_inputs = [], []
        for k, (conv_in, conv_out) in enumerate(self.v_convs):
            a = concat_elu(v)  # [N, D, 1, W]
            if k:
                skip_inputs.append(a)
            rows = torch.cat((history[:, k, 0], a), 2) if v_rows > 1 else a
            c = conv_in(F.pad(rows, (self.v_pad, self.v_pad, 0, 0)))
            b = concat_elu(c)
            rows = torch.cat((history[:, k, 1], b), 2) if v_rows > 1 else b
            v = v + gate(conv_out(F.pad(rows, (self.v_pad, self.v_pad, 0, 0))))
            v_inputs += [a, b]
        skip_inputs.append(concat_elu(v))
        v_row = torch.stack(v_inputs, 1).reshape(N, K, 2, 2 * C, W)

        # horizontal blocks: skip input, biases and taps on the rows above, all columns
        pre_in = F.conv2d(torch.cat(skip_inputs, 1), self.skip_weight, self.in_bias, groups=K)
        if self.layout.h_rows > 1:
            rows = h_ring.index_select(0, h_order)  # [kh-1, W+kw-1, N, K*2*D]
            rows = rows.reshape(rows.shape[0], rows.shape[1], N, K, 2, 2 * C)
            rows = rows.permute(2, 4, 3, 5, 0, 1)  # [N, 2, K, D, kh-1, W+kw-1]
            rows = rows.reshape(N, 2, K * 2 * C, rows.shape[4], rows.shape[5])
            pre_in = pre_in + F.conv2d(rows[:, 0], self.in_top_weight, groups=K)
            pre_out = F.conv2d(rows[:, 1], self.out_top_weight, self.out_bias, groups=K)
        else:
            pre_out = self.out_bias[None, :, None, None].expand(N, -1, 1, W)

        # pack per column: first-layer input, then (conv_in, conv_out) per block
        blocks = torch.cat((pre_in.reshape(N, K, C, W), pre_out.reshape(N, K, 2 * C, W)), 2)
        above = torch.cat((h_first.reshape(N, C, W), blocks.reshape(N, 3 * K * C, W)), 1)
        return v_row, above.permute(2, 0, 1).contiguous()  # [W, N, C + 3KC]


class PixelStep(nn.Module):
    """The horizontal stream and the output at one pixel, from what the caches hold.

    Each down-right-shifted convolution at (i, j) is the row step's sum for
    the rows above plus its last kernel row applied to columns j-kw+1 .. j of
    this row: the cached context and the input just computed.
    """

    def __init__(self, model: TwoStreamPixelCNN):
        super().__init__()
        check_two_stream(model)
        C, K = model.config.channels, model.config.blocks
        kh, kw = model.config.h_kernel
        self.channels, self.blocks, self.context = C, K, kw - 1

        # the pixel just left of (i, j), x(i, j-1), reaches the first layer through one tap
        left = model.h_input_left.conv.weight[:, 0, 1, 0]
        self.register_buffer("left_pixel_weight", left.detach().clone())  # [C]

        # last kernel row as a matrix: rows are (tap, channel), the current column last
        def last_row(conv: nn.Conv2d) -> torch.Tensor:
            weight = conv.weight[:, :, kh - 1]  # [out, D, kw]
            return weight.permute(2, 1, 0).reshape(kw * 2 * C, -1).detach().clone()

        self.in_weights = nn.ParameterList(
            nn.Parameter(last_row(block.conv_in.conv), requires_grad=False)
            for block in model.h_blocks
        )
        self.out_weights = nn.ParameterList(
            nn.Parameter(last_row(block.conv_out.conv), requires_grad=False)
            for block in model.h_blocks
        )
        output = model.output
        self.register_buffer("output_weight", output.weight[:, :, 0, 0].t().detach().clone())
        self.register_buffer("output_bias", output.bias.detach().clone())
        self.above_split = [C] + [C, 2 * C] * K

    def forward(self, above, pixel_left, context):
        """above [N, C + 3KC] (column j of the row step's output); pixel_left [N, 1],
        x(i, j-1), zero at j = 0; context [kw-1, N, L*D], columns j-kw+1 .. j-1 of
        the horizontal cache. Returns (column [N, L*D] for the cache, logit [N])."""
        K, D = self.blocks, 2 * self.channels
        parts = above.split(self.above_split, 1)

        # each convolution's context columns as [N, (kw-1)*D], taps in kernel order
        if self.context:
            context = context.reshape(self.context, -1, 2 * K, D).permute(1, 2, 0, 3)
            context = context.reshape(-1, 2 * K * self.context * D).split(self.context * D, 1)

        # the first layer: what the row step summed, plus x(i, j-1) through its one tap
        h = parts[0] + pixel_left * self.left_pixel_weight  # [N, C]
        column = []
        for k in range(K):
            a = concat_elu(h)  # [N, D]
            taps = torch.cat((context[2 * k], a), 1) if self.context else a
            c = parts[1 + 2 * k] + taps @ self.in_weights[k]  # [N, C]
            b = concat_elu(c)
            taps = torch.cat((context[2 * k + 1], b), 1) if self.context else b
            h = h + gate(parts[2 + 2 * k] + taps @ self.out_weights[k])
            column += [a, b]

        logit = concat_elu(h) @ self.output_weight + self.output_bias  # [N, 1]
        return torch.cat(column, 1), logit[:, 0]


class RasterSession(ABC):
    """Raster-order bookkeeping shared by the torch and ONNX Runtime sessions.

    Steps run lazily: `logits_at(i, j)` runs the row and pixel steps of every
    position up to (i, j) not yet run, reading each pixel from the canvas given
    to `start` unless `set_pixel` changed it. Pixel (i, j) is first read by the
    step of the next position, so it may be set until that step has run.
    Subclasses hold the caches: `_allocate`, `_row`, `_pixel`, `_reindex`.
    """

    def __init__(self, layout: CacheLayout, batch_size: int):
        self.layout = layout
        self.batch_size = batch_size  # the caches are made by start(), for its canvas
        self._next = None  # raster index of the next position to step

    def start(self, canvas: np.ndarray) -> None:
        canvas = np.asarray(canvas, dtype=np.float32)
        H, W = self.layout.height, self.layout.width
        if canvas.ndim != 4 or canvas.shape[1:] != (1, H, W) or len(canvas) < 1:
            raise PixelCNNError(
                f"a canvas of shape {canvas.shape} cannot start cached sampling; "
                f"pass [N, 1, {H}, {W}] with N at least 1."
            )
        N = len(canvas)

        # image rows as (pixel, ones) with two zero rows on top: row i-2 .. i-1 of
        # image row i are rows i .. i+1 here, and zeros are the padding above
        self._pixels = np.zeros((N, 2, H + 2, W), dtype=np.float32)
        self._pixels[:, 0, 2:] = canvas[:, 0]
        self._pixels[:, 1, 2:] = 1.0
        self._logits = np.zeros((N, H, W), dtype=np.float32)
        self._zero_left = np.zeros((N, 1), dtype=np.float32)
        self._next = 0
        self._allocate(N)
        log.debug("cached session started for %d canvases of %dx%d", N, H, W)

    def logits_at(self, i: int, j: int) -> np.ndarray:
        """[N] logits of pixel (i, j) given every pixel before it."""
        position = self._position(i, j)
        W = self.layout.width
        # TODO: known pixels are stepped one at a time like drawn ones; a row whose
        # pixels are all known could run its horizontal stream in one batched call
        while self._next <= position:
            row, column = divmod(self._next, W)
            if column == 0:
                self._row(row)
            self._logits[:, row, column] = self._pixel(row, column)
            self._next += 1
        return self._logits[:, i, j].copy()

    def set_pixel(self, i: int, j: int, values: np.ndarray) -> None:
        position = self._position(i, j)
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        current = self._pixels[:, 0, i + 2, j]
        if len(values) != len(current):
            raise ValueError(f"set_pixel got {len(values)} values for a batch of {len(current)}")
        if self._next > position + 1 and not np.array_equal(current, values):
            raise ValueError(
                f"pixel ({i}, {j}) was already read by later steps; set pixels in raster order"
            )
        current[:] = values

    def select(self, rows: np.ndarray) -> None:
        """Keeps, drops or repeats batch rows in every cache: row n becomes rows[n]."""
        self._check_started()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self._pixels = self._pixels[rows]
        self._logits = self._logits[rows]
        self._zero_left = np.zeros((len(rows), 1), dtype=np.float32)
        self._reindex(rows)

    def close(self) -> None:
        self._next = None
        self._release()

    def pixel_left(self, i: int, j: int) -> np.ndarray:
        """x(i, j-1) as [N, 1]; zero for the first column."""
        return self._pixels[:, 0, i + 2, j - 1 : j] if j else self._zero_left

    def pixel_rows(self, i: int) -> np.ndarray:
        """Image rows i-2 and i-1 as [N, 2, 2, W] of (pixel, ones)."""
        return np.ascontiguousarray(self._pixels[:, :, i : i + 2])

    def _check_started(self) -> None:
        if self._next is None:
            raise ValueError("the session has not been started; call start(canvas) first")

    def _position(self, i: int, j: int) -> int:
        self._check_started()
        H, W = self.layout.height, self.layout.width
        if not (0 <= i < H and 0 <= j < W):
            raise ValueError(f"pixel ({i}, {j}) lies outside the {H}x{W} image")
        return i * W + j

    @abstractmethod
    def _allocate(self, batch: int) -> None:
        """Makes zeroed caches for a batch of `batch`."""

    @abstractmethod
    def _row(self, i: int) -> None:
        """Runs the row step of row i and stores its results in the caches."""

    @abstractmethod
    def _pixel(self, i: int, j: int) -> np.ndarray:
        """Runs the pixel step of (i, j), stores its column, returns the [N] logits."""

    @abstractmethod
    def _reindex(self, rows: np.ndarray) -> None:
        """Takes batch rows `rows` of every cache."""

    @abstractmethod
    def _release(self) -> None:
        """Lets go of the caches."""


class TorchIncrementalSession(RasterSession):
    """The cached session run by PyTorch, on the model's device.

    Row steps run on `threads` torch threads (None: torch's setting), pixel
    steps on one: see torch_threads.
    """

    # TODO: written for any torch device but run only on the CPU so far; on CUDA
    # each pixel step would also wait for its [N] logits to reach the host

    def __init__(self, model: TwoStreamPixelCNN, batch_size: int, device=None, threads=1):
        check_two_stream(model)
        super().__init__(CacheLayout.of(model.config), batch_size)
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.threads = threads
        self.row_step = RowStep(model).to(self.device).eval()
        self.pixel_step = PixelStep(model).to(self.device).eval()

    def _allocate(self, batch: int) -> None:
        layout, device = self.layout, self.device
        self.v_ring = torch.zeros(layout.v_ring_shape(batch), device=device)
        self.h_ring = torch.zeros(layout.h_ring_shape(batch), device=device)
        self.above = torch.zeros(layout.above_shape(batch), device=device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    @torch.inference_mode()
    def _row(self, i: int) -> None:
        layout = self.layout
        v_order = self._tensor(layout.ring_order(layout.v_rows, i))
        h_order = self._tensor(layout.ring_order(layout.h_rows, i))
        with torch_threads(self.threads):
            v_row, self.above = self.row_step(
                self._tensor(self.pixel_rows(i)), self.v_ring, v_order, self.h_ring, h_order
            )
        self.v_ring[i % layout.v_rows] = v_row

    @torch.inference_mode()
    def _pixel(self, i: int, j: int) -> np.ndarray:
        slot, kc = i % self.layout.h_rows, self.layout.context
        with torch_threads(1):
            column, logit = self.pixel_step(
                self.above[j], self._tensor(self.pixel_left(i, j)), self.h_ring[slot, j : j + kc]
            )
        self.h_ring[slot, j + kc] = column
        return logit.cpu().numpy()

    def _reindex(self, rows: np.ndarray) -> None:
        index = self._tensor(rows)
        self.v_ring = self.v_ring.index_select(1, index)
        self.h_ring = self.h_ring.index_select(2, index)
        self.above = self.above.index_select(1, index)

    def _release(self) -> None:
        self.v_ring = self.h_ring = self.above = None


class CachedTorchBackend(TorchBackend):
    """A torch two-stream PixelCNN behind the model contract, with cached sampling.

    `logits` is the full forward pass; `incremental(batch_size)` makes the
    cached session (engine.backend.IncrementalSession) that sampling uses.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", threads=1):
        check_two_stream(model)
        super().__init__(model, device)
        self.threads = threads
        self.name = f"torch ({self.device.type}, cached)"

    def incremental(self, batch_size: int) -> TorchIncrementalSession:
        # built per call, from the weights as they are now
        return TorchIncrementalSession(self.model, batch_size, self.device, self.threads)
