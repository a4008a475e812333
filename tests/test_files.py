"""Files the tool writes."""

import os

from dequantizer.files import atomic_write


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert atomic_write(tmp_path / "a.bin", b"x").stat().st_mode & 0o777 == 0o644  # a temp file would be 0600
        os.umask(0o077)
        assert atomic_write(tmp_path / "b.bin", b"x").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
