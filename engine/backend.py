"""The model contract as a small interface that every backend honours.

A backend turns binary images, float32 numpy [N,1,H,W], into one logit per
pixel of the same shape, where logit (i, j) depends only on pixels before
(i, j) in raster order. Sampling and the GUI hold a backend and never care
whether a torch module or an ONNX Runtime session is behind it.
"""

from typing import Protocol

import numpy as np
import torch


class LogitBackend(Protocol):
    name: str  # a short description for status bars: "torch (cpu)", "onnx (CUDA)", ...

    def logits(self, images: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """A torch PixelCNN behind the contract; runs in eval mode, no gradients."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = getattr(model, "config", None)
        self.name = f"torch ({self.device.type})"

    @torch.no_grad()
    def logits(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return self.model(batch.to(self.device)).float().cpu().numpy()


class IncrementalSession(Protocol):
    """Exact cached generation for a batch, stepping in raster order.

    Made by a backend's optional `incremental(batch_size)` method. Calls come
    in raster order: `logits_at(i, j)` gives the [N] logits of pixel (i, j)
    from the pixels set so far, then `set_pixel(i, j, values)` fixes (i, j);
    `select(rows)` keeps or repeats batch rows (for resampling).
    """

    def start(self, canvas: np.ndarray) -> None: ...

    def logits_at(self, i: int, j: int) -> np.ndarray: ...

    def set_pixel(self, i: int, j: int, values: np.ndarray) -> None: ...

    def select(self, rows: np.ndarray) -> None: ...
