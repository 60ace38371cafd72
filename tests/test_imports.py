"""engine/ and export/ never import Qt: checked in a fresh interpreter.

Every module of both packages is imported there, then sys.modules is searched
for Qt bindings and pyqtgraph.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QT_PACKAGES = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "shiboken2", "pyqtgraph")

# prints {"imported": [...], "qt": [...]} after importing the packages named in argv
PROBE = """
import importlib, json, pkgutil, sys
imported = []
for package_name in sys.argv[1].split(","):
    if not package_name:
        continue
    package = importlib.import_module(package_name)
    imported.append(package_name)
    for module in pkgutil.walk_packages(package.__path__, package_name + "."):
        importlib.import_module(module.name)
        imported.append(module.name)
for extra in sys.argv[2].split(","):
    if extra:
        importlib.import_module(extra)
qt = sorted(name for name in sys.modules if name.split(".")[0] in {qt_packages!r})
print(json.dumps({{"imported": imported, "qt": qt}}))
"""


def import_in_fresh_interpreter(packages, also=()) -> dict:
    script = PROBE.format(qt_packages=set(QT_PACKAGES))
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(packages), ",".join(also)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_engine_and_export_import_no_qt():
    result = import_in_fresh_interpreter(["engine", "export"])

    assert result["qt"] == []
    # every module was reached, not just the packages
    modules = {
        path.stem for package in ("engine", "export") for path in (ROOT / package).glob("*.py")
    }
    imported = {name.rsplit(".", 1)[-1] for name in result["imported"]}
    assert modules - {"__init__"} <= imported


def test_probe_sees_qt_when_something_imports_it():
    # the control: without it, an empty list above could mean a blind probe
    result = import_in_fresh_interpreter([], also=["PySide6.QtCore"])

    assert "PySide6.QtCore" in result["qt"]


def test_opening_an_onnx_model_needs_no_torch():
    # the runtime reads a model's configuration from its metadata; that must not
    # drag torch (hundreds of MB, seconds to import) into an ONNX-only process
    done = subprocess.run(
        [sys.executable, "-c", "import sys, export.runtime; print('torch' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "False"
