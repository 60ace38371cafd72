"""Starting the studio: the QApplication, the settings and the main window.

main.py parses the command line and calls `run`; tests call `run` too, with an
INI file for the settings and a time after which the window closes itself.
"""

import logging
import signal
import sys
import threading

from PySide6 import QtCore, QtWidgets

from gui.settings import APPLICATION, ORGANIZATION, Settings, open_settings

log = logging.getLogger(__name__)


def application(argv=None) -> QtWidgets.QApplication:
    """The running QApplication, made on first use."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    return app


def run(
    model_path=None,
    device: str = "auto",
    settings_path=None,
    quit_after_ms: int | None = None,
    demo: bool = False,
) -> int:
    """Opens the window and runs the event loop until it closes; returns the exit code."""
    from gui.main_window import MainWindow

    app = application()
    settings = Settings(open_settings(settings_path))
    window = MainWindow(settings, model_path, device)
    window.show()
    if demo:
        QtCore.QTimer.singleShot(0, lambda: start_demo(window))
    if quit_after_ms is not None:
        QtCore.QTimer.singleShot(quit_after_ms, window.close)

    # Ctrl+C in the terminal closes the window; the timer lets Python see the signal
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: window.close())
    heartbeat = QtCore.QTimer(window)
    heartbeat.timeout.connect(lambda: None)
    heartbeat.start(250)

    # the loop ends when the window closes, also where other windows (tests) exist
    finished = QtCore.QEventLoop()
    window.destroyed.connect(finished.quit)
    window.setAttribute(QtCore.Qt.WA_DeleteOnClose)
    app.aboutToQuit.connect(finished.quit)
    finished.exec()
    return 0


def start_demo(window) -> None:
    """A random shipped digit with its bottom half masked, completing at once."""
    from engine.masks import bottom_half

    window.random_digit_action.trigger()
    window.drawing.set_mask(bottom_half(window.drawing.image.shape))
    window.canvas.refresh()
    window.panel.complete_action.trigger()
