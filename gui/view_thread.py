"""One worker thread per view: quick jobs first, long jobs in small steps, newest request wins.

A view submits work under a key; a newer job under the same key replaces the
older one, so hovering or dragging a slider never queues stale work. `stop()`
returns once the thread has finished, at most one step later.
"""

import logging
import threading
from collections.abc import Callable, Generator

from PySide6.QtCore import QThread, Signal

from engine.errors import PixelCNNError

log = logging.getLogger(__name__)

_running = 0  # JobThread runs in progress, across all views
_running_lock = threading.Lock()


def running_threads() -> int:
    """How many view threads are still inside run(): 0 once every view has shut down."""
    with _running_lock:
        return _running


class JobThread(QThread):
    """Runs a view's torch work off the GUI thread; results come back as signals.

    A long job is a generator: each `next()` is one short step that yields a
    progress payload, and its return value is the result. Quick jobs run
    between steps, so a click is answered while a long job is under way. A
    quick job gets `should_stop`, true once it is replaced or the thread
    stops; whatever it raises after that counts as stopped, not as failed.
    """

    sigDone = Signal(str, int, object)  # key, ticket, result
    sigFailed = Signal(str, int, str)  # key, ticket, sentence for the user
    sigProgress = Signal(str, int, object)  # key, ticket, what the step yielded

    def __init__(self, parent=None):
        super().__init__(parent)
        self._condition = threading.Condition()
        self._quick: dict[str, tuple[int, Callable]] = {}
        self._long: dict[str, tuple[int, Generator]] = {}
        self._ticket = 0
        self._stopping = False
        self._current: str | None = None  # the key of the job running now

    def submit(self, key: str, function: Callable[[Callable[[], bool]], object]) -> int:
        """Runs function(should_stop) soon; returns the ticket its sigDone will carry."""
        return self._put(self._quick, key, function)

    def submit_steps(self, key: str, steps: Generator) -> int:
        """Advances the generator one step at a time between quick jobs."""
        return self._put(self._long, key, steps)

    def cancel(self, key: str):
        with self._condition:
            self._quick.pop(key, None)
            self._long.pop(key, None)

    def is_busy(self, key: str) -> bool:
        """Whether a job under `key` is waiting or running."""
        with self._condition:
            return key in self._long or key in self._quick or key == self._current

    def stop(self):
        """Drops all pending work, ends the thread and waits for it."""
        with self._condition:
            self._stopping = True
            self._quick.clear()
            self._long.clear()
            self._condition.notify()
        if self.isRunning():
            self.wait()

    def _put(self, queue: dict, key: str, job) -> int:
        with self._condition:
            if self._stopping:
                return -1
            self._ticket += 1
            queue.pop(key, None)
            queue[key] = (self._ticket, job)
            self._condition.notify()
            ticket = self._ticket
        if not self.isRunning():
            self.start()
        return ticket

    def run(self):
        global _running
        with _running_lock:
            _running += 1
        try:
            self._serve()
        finally:
            with _running_lock:
                _running -= 1

    def _serve(self):
        while True:
            with self._condition:
                while not (self._stopping or self._quick or self._long):
                    self._condition.wait()
                if self._stopping:
                    return
                if self._quick:
                    key = next(iter(self._quick))
                    ticket, function = self._quick.pop(key)
                    steps = None
                else:
                    # round robin: the job stepped now goes to the back
                    key = next(iter(self._long))
                    ticket, steps = self._long.pop(key)
                    self._long[key] = (ticket, steps)
                self._current = key

            if steps is None:
                self._run_quick(key, ticket, function)
            else:
                self._run_step(key, ticket, steps)
            with self._condition:
                self._current = None

    def _run_quick(self, key, ticket, function):
        def should_stop() -> bool:
            # a newer job under the same key waiting means this one is stale
            with self._condition:
                return self._stopping or key in self._quick

        try:
            result = function(should_stop)
        except Exception as error:  # reported to the view and logged, never swallowed
            if not should_stop():
                self._report(key, ticket, error)
            return
        if not should_stop():
            self.sigDone.emit(key, ticket, result)

    def _run_step(self, key, ticket, steps):
        try:
            payload = next(steps)
        except StopIteration as finished:
            self._forget(key, ticket)
            self.sigDone.emit(key, ticket, finished.value)
            return
        except Exception as error:
            self._forget(key, ticket)
            self._report(key, ticket, error)
            return
        self.sigProgress.emit(key, ticket, payload)

    def _forget(self, key, ticket):
        with self._condition:
            if self._long.get(key, (None,))[0] == ticket:
                del self._long[key]

    def _report(self, key, ticket, error):
        if isinstance(error, PixelCNNError):
            message = str(error)
        else:
            log.exception("background job %s failed", key)
            message = f"the computation failed ({type(error).__name__}: {error}); see the log."
        self.sigFailed.emit(key, ticket, message)
