"""The project's own error types: every failure a user can cause is one of these, with a clear message."""

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def no_room(where: str, written: str, folder: str | Path, reason: str) -> ConfigurationError:
    """The error for a write of `written` into `folder` (a scratch folder under TMPDIR, say) that found no room, for
    `reason` (the system's words); `where` names what was being done ("Input x.csv", "Cleaning")."""
    return ConfigurationError(
        f"{where}: no room to write {written} in {folder} ({reason}): the disk of that folder is full, or takes "
        "no file this large; the input is not at fault. Free space on that disk, or set TMPDIR to a folder on a "
        "disk with more room."
    )


@contextmanager
def room_checked(where: str, written: str, folder: str | Path) -> Iterator[None]:
    """A write in the block that finds no room raises no_room's error; any other failure passes unchanged.

    Any exception is looked at, not only OSError: Polars reports its failed writes as ComputeErrors.
    """
    try:
        yield
    except Exception as error:
        if not says_no_room(str(error)):
            raise
        raise no_room(where, written, folder, str(error).strip().splitlines()[0]) from error
