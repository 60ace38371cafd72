"""Runs a completion off the GUI thread, with pause, single steps, speed and stop.

The worker iterates engine.sampling.complete on a QThread. Steps go to the GUI
through a one-slot mailbox: the worker keeps only the newest, and announces it
with a signal at most ~30 times a second, and only once the GUI has drawn the
last one, so a fast sampler can neither flood the event queue nor starve
itself of CPU time.
"""

import functools
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from PySide6 import QtCore
from PySide6.QtCore import Signal

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

MIN_ANNOUNCE_INTERVAL_S = 1 / 30
# announce no more often than this many times the GUI's time to show a step
GUI_SHARE_FACTOR = 3
MAX_GIF_FRAMES = 150
PENDING_GREY = 0.3  # pixels not drawn yet, in the GIF
RATE_WINDOW_S = 1.0


@dataclass(frozen=True)
class CompletionRequest:
    """Everything a run needs, fixed when Complete is pressed."""

    image: np.ndarray  # [H,W] uint8 0/1
    known: np.ndarray  # [H,W] bool, True where the pixel is known
    samples: int = 4
    temperature: float = 1.0
    seed: int = 0
    mode: str = "raster"
    candidates: int = 8
    fast: bool = True


@dataclass
class StepReport:
    """The newest step as the GUI shows it: one particle per completion."""

    step: object  # engine.sampling.Step
    shown: np.ndarray  # [S] particle index shown for each completion
    pixels_per_second: float  # completion pixels decided per second, all samples together


@dataclass
class RunResult:
    completion: object | None  # engine.sampling.Completion; None when stopped
    frames: list  # [S,H,W] float32 canvases through the run, for the GIF
    seconds: float


def gif_frame(step, shown: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """The shown canvases with the pixels still to draw in grey, float32 [S,H,W] in [0,1]."""
    canvases = step.canvases[shown].astype(np.float32)
    pending = unknown & np.isnan(step.prob_maps[shown])
    canvases[pending] = PENDING_GREY
    return canvases


def shown_particles(step) -> np.ndarray:
    """For each completion, the candidate with the highest weight so far.

    In raster mode every completion has one particle, which is shown; the
    likelihood-aware modes show the candidate that fits the known pixels best.
    """
    grouped = step.log_weights.reshape(-1, step.candidates)
    return np.arange(len(grouped)) * step.candidates + grouped.argmax(axis=1)


class CompletionWorker(QtCore.QObject):
    """Lives on a QThread; `run` iterates the sampler until it ends or is stopped.

    pause/resume/step_once/stop/set_delay may be called from any thread.
    """

    # each carries the run id, so a late signal of an earlier run is told apart
    sigStepReady = Signal(int)  # take the newest step with take_report()
    sigFinished = Signal(int, object)  # RunResult
    sigFailed = Signal(int, str)

    def __init__(self, backend, request: CompletionRequest, delay_s: float = 0.0, run_id=0):
        super().__init__()
        self.run_id = run_id
        self.backend = backend
        self.request = request
        self._condition = threading.Condition()
        self._paused = False
        self._steps_allowed = 0
        self._stopped = False
        self._delay_s = float(delay_s)
        self._report: StepReport | None = None
        self._announced = True
        self._pending = False
        self._taken_at = 0.0
        self._gui_cost_s = 0.0

    # control, from any thread

    def pause(self) -> None:
        with self._condition:
            self._paused = True

    def resume(self) -> None:
        with self._condition:
            self._paused = False
            self._condition.notify_all()

    def step_once(self) -> None:
        """While paused, lets exactly one more pixel through."""
        with self._condition:
            self._paused = True
            self._steps_allowed += 1
            self._condition.notify_all()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def set_delay(self, seconds: float) -> None:
        with self._condition:
            self._delay_s = max(0.0, float(seconds))
            self._condition.notify_all()

    def is_paused(self) -> bool:
        with self._condition:
            return self._paused

    def take_report(self) -> StepReport | None:
        """The newest step, for the GUI thread; call report_shown once it is painted."""
        with self._condition:
            self._taken_at = time.perf_counter()
            return self._report

    def report_shown(self) -> None:
        """The GUI has drawn the last step: the worker may announce the next one.

        The time the GUI took spaces the announcements, so a slow machine
        spends most of its time sampling rather than redrawing.
        """
        with self._condition:
            if self._pending:
                self._gui_cost_s = time.perf_counter() - self._taken_at
            self._pending = False

    # the run, on the worker thread

    @QtCore.Slot()
    def run(self) -> None:
        from engine.sampling import complete

        started = time.perf_counter()
        frames: list[np.ndarray] = []
        completion = None
        try:
            r = self.request
            steps = complete(
                self.backend,
                r.image,
                r.known,
                samples=r.samples,
                temperature=r.temperature,
                seed=r.seed,
                mode=r.mode,
                candidates=r.candidates,
                fast=r.fast,
            )
            completion = self._drive(steps, frames)
        except PixelCNNError as error:
            self.sigFailed.emit(self.run_id, str(error))
            return
        except Exception as error:  # a bug or a runtime failure: log it, tell the user briefly
            log.exception("completion failed")
            self.sigFailed.emit(
                self.run_id,
                f"Sampling failed ({type(error).__name__}: {error}). "
                "Try the naive sampler or another model; details are in the log.",
            )
            return

        if completion is not None:
            frames.append(completion.images.astype(np.float32))
        seconds = time.perf_counter() - started
        self.sigFinished.emit(self.run_id, RunResult(completion, frames, seconds))

    def _drive(self, steps, frames):
        """Iterates the generator with the controls applied; None when stopped."""
        samples = self.request.samples
        recent: list[tuple[float, int]] = []  # (time, pixels) for the rate
        last_announce = 0.0
        stride = None
        try:
            while True:
                if not self._wait_for_turn():
                    return None
                try:
                    step = next(steps)
                except StopIteration as finished:
                    return finished.value

                # pixels per second over the last second of running time
                now = time.perf_counter()
                recent.append((now, samples if step.drawn else 0))
                while recent and now - recent[0][0] > RATE_WINDOW_S:
                    recent.pop(0)
                span = now - recent[0][0] if len(recent) > 1 else 0.0
                rate = sum(p for _, p in recent[1:]) / span if span > 0 else 0.0

                shown = shown_particles(step)
                if stride is None:
                    stride = max(1, -(-step.total // MAX_GIF_FRAMES))
                if step.index % stride == 0:
                    frames.append(gif_frame(step, shown, ~self.request.known))

                with self._condition:
                    self._report = StepReport(step, shown, rate)
                    self._announced = False
                    stepping = self._paused
                interval = max(MIN_ANNOUNCE_INTERVAL_S, GUI_SHARE_FACTOR * self._gui_cost_s)
                if stepping or now - last_announce >= interval:
                    if self._announce():
                        last_announce = now
        finally:
            # a stopped generator releases its session here, on this thread
            steps.close()

    def _announce(self) -> bool:
        """Signals the newest step unless the GUI has not taken the previous one yet."""
        with self._condition:
            if self._pending or self._announced:
                return False
            self._pending = True
            self._announced = True
        self.sigStepReady.emit(self.run_id)
        return True

    def _wait_for_turn(self) -> bool:
        """Blocks while paused and for the speed delay; False once stopped."""
        started = time.perf_counter()
        while True:
            with self._condition:
                if self._stopped:
                    return False
                if not self._paused:
                    # read the delay each time: the speed may change while waiting
                    remaining = started + self._delay_s - time.perf_counter()
                    if remaining <= 0:
                        return True
                    self._condition.wait(remaining)
                    continue
                if self._steps_allowed > 0:
                    self._steps_allowed -= 1
                    return True

            # paused: show where the run stands, then sleep until woken
            self._announce()
            with self._condition:
                if self._paused and not self._stopped and self._steps_allowed == 0:
                    self._condition.wait(0.25)


class CompletionRunner(QtCore.QObject):
    """Owns the worker and its thread for one run at a time; the GUI talks to this.

    shutdown() stops a run and waits for its thread, so a window can close in
    the middle of sampling without leaving a thread behind.
    """

    sigStep = Signal(object)  # StepReport
    sigFinished = Signal(object)  # RunResult (completion None when stopped)
    sigFailed = Signal(str)
    sigRunningChanged = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._thread: QtCore.QThread | None = None
        self._worker: CompletionWorker | None = None
        self._run_id = 0
        self._delay_s = 0.0

    def is_running(self) -> bool:
        return self._thread is not None

    def is_paused(self) -> bool:
        return self._worker is not None and self._worker.is_paused()

    def start(self, backend, request: CompletionRequest, paused: bool = False) -> None:
        if self.is_running():
            raise PixelCNNError("A completion is already running; stop it first (Esc).")
        self._run_id += 1
        worker = CompletionWorker(backend, request, self._delay_s, self._run_id)
        if paused:
            worker.pause()
        thread = QtCore.QThread(self)
        thread.setObjectName(f"completion-{self._run_id}")
        worker.moveToThread(thread)

        # the worker's signals cross threads, so these slots run on the GUI thread
        thread.started.connect(worker.run)
        worker.sigStepReady.connect(self._on_step_ready)
        worker.sigFinished.connect(self._on_worker_finished)
        worker.sigFailed.connect(self._on_worker_failed)
        thread.finished.connect(self._on_thread_finished)

        self._thread, self._worker = thread, worker
        thread.start()
        self.sigRunningChanged.emit(True)

    def pause(self) -> None:
        if self._worker is not None:
            self._worker.pause()

    def resume(self) -> None:
        if self._worker is not None:
            self._worker.resume()

    def step_once(self) -> None:
        if self._worker is not None:
            self._worker.step_once()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    def set_delay(self, seconds: float) -> None:
        self._delay_s = seconds
        if self._worker is not None:
            self._worker.set_delay(seconds)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stops the run and waits for its thread; True when no thread is left."""
        if self._thread is None:
            return True
        self._worker.stop()
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            log.warning("the completion thread did not stop within %d ms", timeout_ms)
            return False
        self._release()
        return True

    # slots, on the GUI thread

    def _on_step_ready(self, run_id: int) -> None:
        if run_id != self._run_id or self._worker is None:
            return
        report = self._worker.take_report()
        if report is not None:
            self.sigStep.emit(report)
        # a zero timer fires after the repaints that the step asked for
        QtCore.QTimer.singleShot(0, functools.partial(self._on_report_shown, run_id))

    def _on_report_shown(self, run_id: int) -> None:
        if run_id == self._run_id and self._worker is not None:
            self._worker.report_shown()

    def _on_worker_finished(self, run_id: int, result: RunResult) -> None:
        if run_id != self._run_id or self._worker is None:
            return
        # the newest step may not have been shown yet
        report = self._worker.take_report()
        if report is not None:
            self.sigStep.emit(report)
        self._thread.quit()
        self.sigFinished.emit(result)

    def _on_worker_failed(self, run_id: int, message: str) -> None:
        if run_id != self._run_id or self._worker is None:
            return
        self._thread.quit()
        self.sigFailed.emit(message)

    def _on_thread_finished(self) -> None:
        if self._thread is not None and self._thread.isFinished():
            self._release()

    def _release(self) -> None:
        thread = self._thread
        self._thread = self._worker = None
        if thread is not None:
            thread.wait()
            thread.deleteLater()
            self.sigRunningChanged.emit(False)
