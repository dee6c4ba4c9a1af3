"""A process's resident memory, now and at its peak, as Linux's /proc reports it.

The peak is the process's own high-water mark (VmHWM). getrusage's ru_maxrss is not: Linux carries
the peak of the process that started a process over into it, so a process started by a flow run
holding 700 MB would report at least that much.
"""

from pathlib import Path
from typing import NamedTuple


class ResidentMemory(NamedTuple):
    now_mib: float
    peak_mib: float


def resident_memory(pid: int | str = "self") -> ResidentMemory | None:
    """The process's resident set size now and at its peak (VmRSS, VmHWM); None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
           if line.startswith(("VmRSS:", "VmHWM:"))}
    if len(kib) < 2:  # an exited process not yet reaped holds no memory
        return None
    return ResidentMemory(now_mib=kib["VmRSS"] / 1024, peak_mib=kib["VmHWM"] / 1024)
