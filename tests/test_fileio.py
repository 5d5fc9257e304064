"""The one atomic writer: no partial file on a crash, files readable by others."""
import os
import stat

import pytest

from dom2_jax import fileio
from dom2_jax.training import reporting


def test_atomic_write_is_all_or_nothing_and_0644(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "d" / "x.json"
        reporting.write_json(str(p), {"a": 1})
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
        fileio.atomic_write(str(p), lambda f: f.write(b"\x89PNG"), binary=True)
        assert p.read_bytes() == b"\x89PNG" and stat.S_IMODE(os.stat(p).st_mode) == 0o644

        def crash(f):
            f.write("half")
            raise RuntimeError("disk full")
        with pytest.raises(RuntimeError, match="disk full"):
            fileio.atomic_write(str(p), crash)
        assert p.read_bytes() == b"\x89PNG"  # the old file is intact
        assert os.listdir(p.parent) == ["x.json"]  # and no temporary file is left
    finally:
        os.umask(old)
