"""A guard against PySide6 6.12.0 dropping references to None and True on Python 3.11.

In PySide6 6.12.0 a method that returns nothing (QTimer.start, processEvents,
every repaint pyqtgraph asks for) hands back None without taking a reference,
and SignalInstance.emit does the same with True. Where these are ordinary
objects (Python 3.11 and older) each call lowers their count, and a live view
makes thousands of calls a second: CPython soon aborts with "none_dealloc:
deallocating None" or "bool_dealloc". 6.11.3 counts correctly; Python 3.12 made
None, True and False immortal, so neither needs this.
"""

import ctypes
import logging
import sys

from PySide6 import QtCore

log = logging.getLogger(__name__)

PROBE_CALLS = 64
# references added, as Python 3.12 does for immortal objects: at a million
# dropped references a second this lasts more than eight years
RESERVE = 1 << 48

_guarded = False


class _Probe(QtCore.QObject):
    sigProbe = QtCore.Signal()


def dropped_references() -> dict[str, int]:
    """How many references to None and True a few PySide6 calls lose (0 when sound)."""
    probe = _Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(PROBE_CALLS):
        probe.setObjectName("probe")
        probe.sigProbe.emit()
    return {
        "None": none_before - sys.getrefcount(None),
        "True": true_before - sys.getrefcount(True),
    }


def guard_singleton_refcounts() -> bool:
    """Adds a large reserve of references to None, True and False where PySide6 drops them.

    Returns True when it added them. Safe to call any number of times; does
    nothing on Python 3.12+ or with a PySide6 that counts correctly.
    """
    global _guarded
    if _guarded or sys.version_info >= (3, 12):
        return False
    dropped = dropped_references()
    # other threads may touch these meanwhile; the bug shows as one per call
    if max(dropped.values()) < PROBE_CALLS // 2:
        return False

    # TODO: remove once the project pins a PySide6 without this bug (6.12.0 has it,
    # 6.11.3 does not); ob_refcnt is the first field of every CPython object
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += RESERVE
    _guarded = True
    log.warning(
        "PySide6 %s loses references to None and True (%s per %d calls); "
        "guarded them for this run. Install PySide6 6.11 or run Python 3.12+.",
        qt_binding_version(),
        dropped,
        PROBE_CALLS,
    )
    return True


def qt_binding_version() -> str:
    import PySide6

    return PySide6.__version__
