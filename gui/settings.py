"""What a person tunes in the studio, kept between runs with QSettings.

Each key has a default whose type is the type read back, so an INI file's
strings come back as ints, floats and bools. Tests pass an INI file of their
own and never touch the user's settings.
"""

import logging
import os

from PySide6.QtCore import QByteArray, QSettings

log = logging.getLogger(__name__)

ORGANIZATION = "PixelCNN studio"
APPLICATION = "PixelCNN studio"

DEFAULTS = {
    "tool": "pen",
    "brush_size": 1,
    "grid": True,
    "samples": 4,
    "speed": 7,
    "temperature": 1.0,
    "seed": 0,
    "new_seed": True,
    "mode": "raster",
    "candidates": 8,
    "sampler": "fast",
    "view": "side",
    "tab": 0,
    "last_dir": "",
}
BYTE_KEYS = ("geometry", "window_state", "splitter")


def open_settings(path: str | os.PathLike | None = None) -> QSettings:
    """The user's settings, or an INI file at `path` (tests, --settings)."""
    if path:
        return QSettings(str(path), QSettings.IniFormat)
    return QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)


class Settings:
    """Typed access to a QSettings store; unknown keys are a programming error."""

    def __init__(self, store: QSettings):
        self.store = store

    def get(self, key: str):
        default = DEFAULTS[key]
        raw = self.store.value(key, default)
        try:
            if isinstance(default, bool):
                return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1")
            return type(default)(raw)
        except (TypeError, ValueError):
            log.warning("setting %s=%r is unreadable; using %r", key, raw, default)
            return default

    def set(self, key: str, value) -> None:
        if key not in DEFAULTS:
            raise KeyError(key)
        self.store.setValue(key, value)

    def get_bytes(self, key: str) -> QByteArray | None:
        if key not in BYTE_KEYS:
            raise KeyError(key)
        raw = self.store.value(key)
        return raw if isinstance(raw, QByteArray) and not raw.isEmpty() else None

    def set_bytes(self, key: str, value: QByteArray) -> None:
        if key not in BYTE_KEYS:
            raise KeyError(key)
        self.store.setValue(key, value)

    def sync(self) -> None:
        self.store.sync()
