"""The project's own error types: every failure a user can cause is one of these, with a clear message."""

import errno
import os
from pathlib import Path

# How the system words a write that found no room: the disk is full, or its file system (or `ulimit -f`) takes no
# file that large. Polars' OSErrors carry no errno (some are ComputeErrors), and ingest's decoding child answers
# with the text only: the words are what is recognised.
_NO_ROOM = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EFBIG))


class SegmentsError(Exception):
    """Base class; the CLI prints these as one paragraph without a stack trace."""


class InputError(SegmentsError):
    """The input cannot be read or does not have the shape of an invoice-line export."""


class DataContractError(SegmentsError):
    """Data handed from one stage to the next breaks its Pandera contract."""

    def __init__(self, message: str, failure_cases=None):
        super().__init__(message)
        self.failure_cases = failure_cases


class ConfigurationError(SegmentsError):
    """A setting given through the environment has a value that cannot be used."""


def says_no_room(reason: str) -> bool:
    """Whether an error's text is that of a write that found no room (ENOSPC or EFBIG)."""
    return any(words in reason for words in _NO_ROOM)


def no_room(source: str, written: str, folder: str | Path, reason: str) -> ConfigurationError:
    """The error for a write of `written` into `folder` (a scratch folder under TMPDIR, say), while the input `source`
    was read, that found no room, for `reason` (the system's words)."""
    return ConfigurationError(
        f"Input {source}: no room to write {written} in {folder} ({reason}): the disk of that folder is full, or "
        "takes no file this large; the input is not at fault. Free space on that disk, or set TMPDIR to a folder on "
        "a disk with more room."
    )
