"""A disk without room, for tests: /dev/full, where every write fails with ENOSPC, as on a full disk."""

import tempfile
from pathlib import Path

import pytest

FULL_DISK = Path("/dev/full")
needs_a_full_disk = pytest.mark.skipif(not FULL_DISK.exists(), reason="needs /dev/full, where every write fails")


def writes_fail_in_temporary_folders(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Every temporary folder made from now on holds a file `name` that is /dev/full."""

    class OnAFullDisk(tempfile.TemporaryDirectory):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            Path(self.name, name).symlink_to(FULL_DISK)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", OnAFullDisk)
