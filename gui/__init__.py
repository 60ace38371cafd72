"""The PySide6 + pyqtgraph desktop studio; started by `python main.py`."""
