"""Filling unknown pixels: raster sampling, likelihood-aware completion, scoring.

Works with any backend behind the model contract (torch or ONNX Runtime) and
streams one step per pixel, so a GUI worker thread can show the canvases fill.
Unconditional sampling is completion with every pixel unknown.
"""

import logging
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from threading import Event

import numpy as np

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

MODES = ("raster", "smc", "importance")
# smc: a completion's particles are resampled at a row end when their effective
# sample size falls below this fraction of their number
RESAMPLE_BELOW = 0.5
# rows per forward pass when scoring many images
SCORE_BATCH = 256


@dataclass
class Step:
    """One pixel visited by `complete`, with copies of the state after it.

    Arrays are indexed by particle p; completion s owns particles
    s*candidates .. s*candidates + candidates-1 (in raster mode candidates
    is 1, so particles are the samples). Every array is a fresh copy that the
    caller may keep or hand to another thread.
    """

    index: int  # 0-based step number
    total: int  # steps in the whole run
    position: tuple[int, int]  # (i, j) of the pixel
    drawn: bool  # True: an unknown pixel was drawn; False: a known one was scored
    probability: np.ndarray  # [P] float32 p(ink) at this pixel, at the run's temperature
    values: np.ndarray  # [P] uint8 the pixel's value: drawn, or the known one
    canvases: np.ndarray  # [P,H,W] uint8 the particles' images so far
    prob_maps: np.ndarray  # [P,H,W] float32 p(ink) of every drawn pixel, NaN elsewhere
    log_weights: np.ndarray  # [P] float64 log-probability of the known pixels scored
    resampled: bool  # particles were resampled after this pixel: canvases jumped
    candidates: int  # particles per completion

    @property
    def fraction_done(self) -> float:
        return (self.index + 1) / self.total


@dataclass
class Completion:
    """The finished completions and how well the model thinks they fit.

    Likelihoods are those of the model itself (temperature 1), in nats.
    `observed_log_likelihood` sums only the known pixels that come after the
    first unknown pixel in raster order: the ones plain sampling cannot see.
    """

    images: np.ndarray  # [S,H,W] uint8
    prob_maps: np.ndarray  # [S,H,W] float32 p(ink) of drawn pixels, NaN at known ones
    log_likelihood: np.ndarray  # [S] float64 log p(whole image)
    observed_log_likelihood: np.ndarray  # [S] float64 log p(known pixels after the hole)
    effective_sample_size: np.ndarray  # [S] of the candidates at the final choice; 1 in raster
    mode: str
    steps: int


CancelFlag = Event | Callable[[], bool] | None


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) without overflow for large |x|."""
    return -np.logaddexp(0.0, -x)


def pixel_log_prob(logits: np.ndarray, values: np.ndarray) -> np.ndarray:
    """x*log_sigmoid(l) + (1-x)*log_sigmoid(-l), elementwise, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    return values * log_sigmoid(logits) + (1.0 - values) * log_sigmoid(-logits)


def log_prob(backend, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p of binary images under the model, from one forward pass per batch.

    images: [N,H,W] or [N,1,H,W] of 0/1. Returns (log p per image [N] in nats,
    log p per pixel [N,H,W]); negate the first for the usual NLL figure.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise PixelCNNError(f"images to score must be [N,H,W], got shape {images.shape}.")
    check_binary(images, "images to score")

    per_pixel = np.empty(images.shape, dtype=np.float64)
    for start in range(0, len(images), SCORE_BATCH):
        batch = images[start : start + SCORE_BATCH].astype(np.float32)
        logits = backend.logits(batch[:, None])[:, 0]
        per_pixel[start : start + SCORE_BATCH] = pixel_log_prob(logits, batch)
    return per_pixel.sum(axis=(1, 2)), per_pixel


def check_binary(values: np.ndarray, what: str) -> None:
    if values.size and not np.isin(values, (0, 1)).all():
        raise PixelCNNError(f"{what} must hold only 0 and 1; binarize it first.")


def complete(
    backend,
    image: np.ndarray,
    known_mask: np.ndarray,
    samples: int = 1,
    temperature: float = 1.0,
    seed: int | None = None,
    mode: str = "raster",
    candidates: int = 8,
    fast: bool = True,
) -> Generator[Step, None, Completion]:
    """Fills the unknown pixels of `image`, one step per pixel, in raster order.

    image: [H,W] of 0/1; known_mask: [H,W] bool, True where the pixel is known.
    Known pixels are copied into every result bit for bit; each unknown pixel
    is 1 when u < sigmoid(logit / temperature), with u ~ U(0,1) drawn once per
    (particle, pixel) from `seed`, so a seeded run repeats exactly and the
    fast and the naive path draw the same pixels.

    mode "raster": `samples` independent completions; a known pixel needs no
    network at all, so it makes no step. Known pixels after the hole cannot
    steer these completions.
    mode "importance": `candidates` raster completions per sample, each
    weighted by the model's probability of the known pixels after the hole;
    one per sample is chosen by weight at the end (importance resampling).
    mode "smc": the same candidates as particles of sequential Monte Carlo,
    resampled at each row end where their effective sample size is low, so
    effort goes to completions that agree with the known pixels met so far.
    Both target p(hole | every known pixel) under the tempered model; known
    pixels after the first unknown one make steps of their own (drawn=False).
    Where no known pixel follows the hole they equal raster mode, and run one
    particle per sample.

    With fast=True and a backend that offers `incremental(batch_size)`, the
    cached session (engine.backend.IncrementalSession) computes the logits;
    otherwise one full forward pass is made per unknown pixel.

    Returns a generator: iterate it for the `Step`s; its return value (the
    StopIteration value) is the `Completion`. It starts no threads and holds
    nothing outside itself: to cancel, stop iterating and call `.close()`
    (`run_completion` does this). Arguments are checked here, before the
    first step, and raise PixelCNNError.
    """
    image, known, temperature = check_request(
        image, known_mask, samples, temperature, mode, candidates
    )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise PixelCNNError(f"seed must be a whole number or None, got {seed!r}.")
    per_sample = 1 if mode == "raster" else candidates
    return completion_steps(
        backend, image, known, samples, per_sample, temperature, seed, mode, fast
    )


def check_request(image, known_mask, samples, temperature, mode, candidates):
    image = np.asarray(image)
    known = np.asarray(known_mask)
    if image.ndim != 2:
        raise PixelCNNError(f"the image must be 2-D [H,W], got shape {image.shape}.")
    if known.shape != image.shape:
        raise PixelCNNError(
            f"the known mask has shape {known.shape} but the image {image.shape}; they must match."
        )
    if known.dtype != np.bool_:
        check_binary(known, "the known mask")
        known = known.astype(bool)
    check_binary(image[known], "the image's known pixels")
    if mode not in MODES:
        raise PixelCNNError(f"mode '{mode}' is unknown; use one of {MODES}.")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise PixelCNNError(f"samples must be a whole number of at least 1, got {samples!r}.")
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)):
        raise PixelCNNError(f"candidates must be a whole number, got {candidates!r}.")
    if candidates < 1:
        raise PixelCNNError(f"candidates must be at least 1, got {candidates}.")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError) as error:
        raise PixelCNNError(f"temperature must be a number, got {temperature!r}.") from error
    if not math.isfinite(temperature) or temperature <= 0:
        raise PixelCNNError(f"temperature must be a finite number above 0, got {temperature}.")

    # unknown pixels start blank; their old values must not leak in
    return np.where(known, image, 0).astype(np.uint8), known, temperature


def completion_steps(backend, image, known, samples, per_sample, temperature, seed, mode, fast):
    """The generator behind `complete`; arguments are already checked."""
    H, W = image.shape

    # which pixels make a step: the unknown ones, and for the weighted modes
    # the known ones after the first unknown pixel
    raster = np.arange(H * W).reshape(H, W)
    unknown = ~known
    first_unknown = raster[unknown].min() if unknown.any() else H * W
    after_hole = known & (raster > first_unknown)
    visited = unknown | after_hole if mode != "raster" else unknown
    positions = [divmod(int(k), W) for k in raster[visited]]
    total = len(positions)

    # with nothing known after the hole every weight is equal: spare the candidates
    if not after_hole.any() and per_sample > 1:
        log.debug("no known pixel follows the hole; %s runs one particle per sample", mode)
        per_sample = 1

    # one uniform per (particle, pixel), whichever path computes the logits
    particles = samples * per_sample
    rng = np.random.default_rng(seed)
    pixel_rng, resample_rng = rng.spawn(2)
    uniforms = pixel_rng.random((particles, H, W))
    canvases = np.repeat(image[None], particles, axis=0)
    prob_maps = np.full((particles, H, W), np.nan, dtype=np.float32)
    log_weights = np.zeros(particles)

    source = open_logit_source(backend, canvases, fast)
    log.debug("completing %d pixels of %d particles with %s", total, particles, source.name)
    try:
        for index, (i, j) in enumerate(positions):
            logits = np.asarray(source.logits_at(i, j), dtype=np.float64) / temperature
            probability = sigmoid(logits)

            if unknown[i, j]:
                values = (uniforms[:, i, j] < probability).astype(np.uint8)
                canvases[:, i, j] = values
                prob_maps[:, i, j] = probability
                source.set_pixel(i, j, values)
            else:
                values = canvases[:, i, j].copy()
                log_weights += pixel_log_prob(logits, values)

            # smc: at a row end, refresh the particles whose weights have degenerated
            resampled = False
            row_ends = index + 1 < total and positions[index + 1][0] != i
            if mode == "smc" and row_ends:
                rows, degenerate = resample_rows(log_weights, per_sample, resample_rng)
                if degenerate.any():
                    canvases[:] = canvases[rows]
                    prob_maps[:] = prob_maps[rows]
                    log_weights = log_weights[rows]
                    # resampled particles start again with equal weights
                    log_weights.reshape(-1, per_sample)[degenerate] = 0.0
                    source.select(rows)
                    resampled = True

            yield Step(
                index=index,
                total=total,
                position=(i, j),
                drawn=bool(unknown[i, j]),
                probability=probability.astype(np.float32),
                values=values,
                canvases=canvases.copy(),
                prob_maps=prob_maps.copy(),
                log_weights=log_weights.copy(),
                resampled=resampled,
                candidates=per_sample,
            )
    finally:
        source.close()

    # one completion per sample, chosen among its candidates by weight
    chosen, ess = choose_by_weight(log_weights, per_sample, resample_rng)
    images = canvases[chosen]
    log_likelihood, per_pixel = log_prob(backend, images)
    return Completion(
        images=images,
        prob_maps=prob_maps[chosen],
        log_likelihood=log_likelihood,
        observed_log_likelihood=per_pixel[:, after_hole].sum(axis=1),
        effective_sample_size=ess,
        mode=mode,
        steps=total,
    )


def grouped_weights(log_weights: np.ndarray, per_sample: int) -> np.ndarray:
    """Normalized weights [S, candidates] of each completion's particles."""
    grouped = log_weights.reshape(-1, per_sample)
    weights = np.exp(grouped - grouped.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def effective_sample_size(weights: np.ndarray) -> np.ndarray:
    """1 / sum(w^2) of normalized weights, per row: from 1 up to the row length."""
    return 1.0 / np.square(weights).sum(axis=1)


def resample_rows(log_weights, per_sample, rng) -> tuple[np.ndarray, np.ndarray]:
    """Systematic resampling of the completions whose particles have degenerated.

    Returns (the particle each slot copies, which completions were resampled
    [S] bool); healthy completions keep their own particles.
    """
    weights = grouped_weights(log_weights, per_sample)
    degenerate = effective_sample_size(weights) < RESAMPLE_BELOW * per_sample
    S = len(weights)
    rows = np.arange(S * per_sample).reshape(S, per_sample)

    # one uniform per completion, then evenly spaced pointers into its weights
    offsets = rng.random(S)
    for s in np.flatnonzero(degenerate):
        pointers = (offsets[s] + np.arange(per_sample)) / per_sample
        picks = np.searchsorted(np.cumsum(weights[s]), pointers, side="right")
        rows[s] = s * per_sample + np.minimum(picks, per_sample - 1)
    return rows.ravel(), degenerate


def choose_by_weight(log_weights, per_sample, rng) -> tuple[np.ndarray, np.ndarray]:
    """Draws one particle per completion with probability equal to its weight."""
    weights = grouped_weights(log_weights, per_sample)
    ess = effective_sample_size(weights)
    if per_sample == 1:
        return np.arange(len(weights)), ess
    cumulative = np.cumsum(weights, axis=1)
    pointers = rng.random(len(weights))[:, None] * cumulative[:, -1:]
    picks = np.minimum((cumulative <= pointers).sum(axis=1), per_sample - 1)
    return np.arange(len(weights)) * per_sample + picks, ess


class NaiveLogits:
    """Logits from full forward passes, one per pixel drawn.

    A pass gives every pixel's logit from the canvas as it was; the logit of
    (i, j) depends only on earlier pixels, so one pass serves every pixel up
    to and including the next unknown one, and known pixels cost nothing.
    """

    name = "full forward passes"

    def __init__(self, backend, canvases: np.ndarray):
        self.backend = backend
        self.canvases = canvases  # shared with the caller, updated in place
        self.cached = None
        self.passes = 0

    def logits_at(self, i: int, j: int) -> np.ndarray:
        if self.cached is None:
            batch = self.canvases[:, None].astype(np.float32)
            self.cached = self.backend.logits(batch)[:, 0]
            self.passes += 1
        return self.cached[:, i, j]

    def set_pixel(self, i: int, j: int, values: np.ndarray) -> None:
        # the canvas holds the value already; later logits must see it
        self.cached = None

    def select(self, rows: np.ndarray) -> None:
        if self.cached is not None:
            self.cached = self.cached[rows]

    def close(self) -> None:
        self.cached = None


class SessionLogits:
    """Logits from a backend's cached incremental session (the fast path)."""

    def __init__(self, session, canvases: np.ndarray, name: str):
        self.session = session
        self.name = f"incremental session of {name}"
        session.start(canvases[:, None].astype(np.float32))

    def logits_at(self, i: int, j: int) -> np.ndarray:
        return self.session.logits_at(i, j)

    def set_pixel(self, i: int, j: int, values: np.ndarray) -> None:
        self.session.set_pixel(i, j, values.astype(np.float32))

    def select(self, rows: np.ndarray) -> None:
        self.session.select(rows)

    def close(self) -> None:
        close = getattr(self.session, "close", None)
        if close is not None:
            close()
        self.session = None


def open_logit_source(backend, canvases: np.ndarray, fast: bool):
    """The session when asked for and offered, else full forward passes."""
    incremental = getattr(backend, "incremental", None)
    if fast and incremental is not None:
        return SessionLogits(incremental(len(canvases)), canvases, backend.name)
    return NaiveLogits(backend, canvases)


def is_cancelled(cancel: CancelFlag) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return cancel.is_set()
    return bool(cancel())


def drain(steps: Iterator[Step], on_step=None, cancel: CancelFlag = None) -> Completion | None:
    """Runs a `complete` generator to its end; None if cancelled on the way."""
    try:
        while True:
            if is_cancelled(cancel):
                log.info("completion cancelled")
                return None
            try:
                step = next(steps)
            except StopIteration as finished:
                return finished.value
            if on_step is not None:
                on_step(step)
    finally:
        # a cancelled generator releases its session here, on this thread
        steps.close()


def run_completion(
    backend,
    image: np.ndarray,
    known_mask: np.ndarray,
    samples: int = 1,
    temperature: float = 1.0,
    seed: int | None = None,
    mode: str = "raster",
    candidates: int = 8,
    fast: bool = True,
    on_step: Callable[[Step], None] | None = None,
    cancel: CancelFlag = None,
) -> Completion | None:
    """`complete` run to the end on the calling thread; meant for worker threads.

    `on_step(step)` is called after every step (from this thread: a GUI
    passes something that posts to its own thread). `cancel` is a
    threading.Event or a callable returning True to stop; it is checked before
    every step, and a cancelled run returns None and leaves nothing behind.
    """
    steps = complete(
        backend, image, known_mask, samples, temperature, seed, mode, candidates, fast
    )
    return drain(steps, on_step, cancel)


def sample(
    backend,
    n: int,
    shape: tuple[int, int] = (28, 28),
    temperature: float = 1.0,
    seed: int | None = None,
    fast: bool = True,
    on_step: Callable[[Step], None] | None = None,
    cancel: CancelFlag = None,
) -> Completion | None:
    """n unconditional samples: completion with every pixel unknown."""
    blank = np.zeros(shape, dtype=np.uint8)
    nothing_known = np.zeros(shape, dtype=bool)
    return run_completion(
        backend,
        blank,
        nothing_known,
        samples=n,
        temperature=temperature,
        seed=seed,
        fast=fast,
        on_step=on_step,
        cancel=cancel,
    )
