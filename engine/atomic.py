"""Files that appear whole or not at all.

Everything the project writes for keeps (checkpoints, ONNX files, downloads)
goes to a temporary file beside the target, is flushed to disk, then renamed
over the target: a crash, a kill or a full disk leaves the previous file.
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644):
    """Yields a binary stream; on a clean exit its bytes replace `path`."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())

        # mkstemp makes the file private; what we ship is meant to be read
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
