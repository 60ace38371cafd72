"""ONNX side of the PixelCNN studio: export, verification, ONNX Runtime sessions.

Nothing here imports Qt.
"""
