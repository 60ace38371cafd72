"""A guard against a PySide6 bug that drops a reference to True on every signal emit.

PySide6 6.12.0's SignalInstance.emit returns True without taking a reference.
Where True is an ordinary object (Python 3.11 and older) each emit lowers its
count; pyqtgraph emits on every image update, so a live view brings it to zero
within seconds and CPython aborts with "bool_dealloc: deallocating True or False".
"""

import ctypes
import logging
import sys

from PySide6 import QtCore

log = logging.getLogger(__name__)

PROBE_EMITS = 64
# references added to True and False, as Python 3.12 does for immortal objects:
# at a million emits a second this lasts more than a decade
RESERVE = 1 << 48

_guarded = False


class _Probe(QtCore.QObject):
    sigProbe = QtCore.Signal()


def emit_drops_references() -> bool:
    """True when emitting a signal lowers True's reference count (the bug is here)."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(PROBE_EMITS):
        probe.sigProbe.emit()
    after = sys.getrefcount(True)
    # other threads may touch True meanwhile; the bug shows as one per emit
    return before - after >= PROBE_EMITS // 2


def guard_bool_refcounts() -> bool:
    """Adds a large reserve of references to True and False where the bug is; True if added.

    Safe to call any number of times; does nothing on Python 3.12+ (immortal
    bools) or with a PySide6 whose emit counts correctly.
    """
    global _guarded
    if _guarded or sys.version_info >= (3, 12) or not emit_drops_references():
        return False

    # TODO: remove once PySide6 returns a new reference from emit (seen in 6.12.0);
    # ob_refcnt is the first field of every CPython object
    for value in (True, False):
        ctypes.c_ssize_t.from_address(id(value)).value += RESERVE
    _guarded = True
    log.info("PySide6 %s drops a reference on each emit; True and False are guarded", qt_binding())
    return True


def qt_binding() -> str:
    import PySide6

    return PySide6.__version__
