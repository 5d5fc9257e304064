"""The one atomic file writer: a crash never leaves a partial file, and files are readable by
others (0644 under the usual umask, like any file the user writes; mkstemp alone gives 0600)."""
from __future__ import annotations

import os
import tempfile
from typing import Callable, IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write_fn: Callable[[IO], None], binary: bool = False) -> str:
    """Calls ``write_fn(f)`` on a temporary file next to ``path``, fsyncs it, gives it mode
    0666 & ~umask and renames it over ``path``. Returns ``path``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
