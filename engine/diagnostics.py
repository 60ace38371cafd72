"""Numbers behind the studio's explanations: why the loss takes logits, why blocks are residual.

Also reads a training run's metrics log and traces the activation functions
with autograd. Everything is computed, nothing is tabulated by hand.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import PixelCNNError
from engine.model import MaskedPixelCNN, ModelConfig, build_model
from engine.receptive_field import OUTPUT, staged_forward

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- loss from logits


def loss_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel Bernoulli NLL in nats, stable for any logit (softplus form)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def loss_from_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same NLL through a rounded probability: sigmoid first, then log.

    In float32, sigmoid(l) rounds to exactly 1 for large l (and to 0 for very
    negative l), so log(1 - p) or log(p) becomes -inf: the loss is inf and its
    gradient nan where the stable form gives a finite number.
    """
    p = torch.sigmoid(logits)
    return torch.where(targets > 0.5, -torch.log(p), -torch.log(1 - p))


def exact_loss(logit: float, target: float) -> float:
    """The NLL in float64 from the logit alone: softplus(-l) for ink, softplus(l) else."""
    z = -logit if target > 0.5 else logit
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def pixel_losses(logit: float, target: float) -> dict:
    """Loss and d loss / d logit for one pixel, by both routes, in float32."""
    result = {"logit": logit, "target": target, "exact_loss": exact_loss(logit, target)}
    for name, route in (("logits", loss_from_logits), ("probability", loss_from_probability)):
        logit_tensor = torch.tensor(logit, dtype=torch.float32, requires_grad=True)
        loss = route(logit_tensor, torch.tensor(target, dtype=torch.float32))
        (gradient,) = torch.autograd.grad(loss, logit_tensor)
        result[f"{name}_loss"] = loss.item()
        result[f"{name}_gradient"] = float(gradient)
    result["probability"] = float(torch.sigmoid(torch.tensor(logit, dtype=torch.float32)))
    return result


def float32_sigmoid_saturation() -> float:
    """The smallest logit whose float32 sigmoid rounds to exactly 1.0."""
    low, high = 0.0, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        if float(torch.sigmoid(torch.tensor(middle, dtype=torch.float32))) == 1.0:
            high = middle
        else:
            low = middle
    return high


# ---------------------------------------------------------------- residual connections


class StopRequested(Exception):
    """Raised inside a long computation when its caller asked it to stop."""


def _stop_between_blocks(modules, should_stop):
    """Hooks that raise StopRequested at every block, forward and backward."""

    def check(*_):
        if should_stop():
            raise StopRequested("stopped on request")

    def on_forward(module, args, output):
        check()
        if output.requires_grad:
            output.register_hook(check)

    return [module.register_forward_hook(on_forward) for module in modules]


def block_gradient_norms(
    config: ModelConfig,
    images: torch.Tensor,
    residual: bool = True,
    seed: int = 0,
    should_stop=None,
) -> tuple[np.ndarray, float]:
    """Norm of d loss / d (each block's parameters) at initialization, and the loss.

    The network is built fresh from `config` with `seed`, so the variants with
    and without skip connections share every weight. Block k of a two-stream
    model is its vertical and horizontal block k together. `should_stop` is
    asked at every block, forward and backward; True raises StopRequested.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(config).eval()
    if isinstance(model, MaskedPixelCNN):
        groups = [[layer] for layer in model.layers]
    else:
        groups = [[v, h] for v, h in zip(model.v_blocks, model.h_blocks, strict=True)]
    if should_stop is not None:
        # conv_out runs with and without the skip, so its hooks fire in both variants
        layers = [getattr(m, "conv_out", m) for modules in groups for m in modules]
        _stop_between_blocks(layers, should_stop)

    # nats per image, the training loss
    logits = staged_forward(model, images, residual=residual)[OUTPUT]
    loss = loss_from_logits(logits, images).sum() / images.shape[0]
    loss.backward()

    norms = []
    for modules in groups:
        squares = sum(
            float((p.grad**2).sum())
            for module in modules
            for p in module.parameters()
            if p.grad is not None
        )
        norms.append(math.sqrt(squares))
    return np.array(norms), loss.item()


# ---------------------------------------------------------------- activations


def activation_curves(x: np.ndarray) -> dict[str, np.ndarray]:
    """ELU and ReLU at x with their derivatives, the derivatives by autograd."""
    curves = {}
    for name, function in (("elu", F.elu), ("relu", F.relu)):
        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        y = function(t)
        (slope,) = torch.autograd.grad(y.sum(), t)
        curves[name] = y.detach().numpy()
        curves[f"{name}_derivative"] = slope.numpy()
    return curves


# ---------------------------------------------------------------- metrics log


def read_metrics(path: str | Path) -> list[dict]:
    """The per-epoch records of a run's metrics.jsonl, in epoch order.

    A line that does not parse (a run writing it right now) is skipped with a
    warning rather than failing the whole log.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise PixelCNNError(
            f"could not read the metrics log {path} ({error.strerror}); "
            "point to the metrics.jsonl of a training run."
        ) from error

    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("skipping unreadable line %d of %s", number, path)
            continue
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    records.sort(key=lambda record: record["epoch"])
    return records
