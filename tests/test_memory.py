"""tasks.memory: a process's resident memory, its peak its own."""

import subprocess
import sys

from tasks.memory import resident_memory

PRINT_OWN_PEAK = "from tasks.memory import resident_memory; print(resident_memory().peak_mib)"


def test_a_process_peak_is_its_own_not_that_of_the_process_that_started_it():
    starter_memory = b"\x01" * 2**30  # written, so resident: as a flow run holds its data
    started = subprocess.run([sys.executable, "-c", PRINT_OWN_PEAK], capture_output=True, text=True, check=True)
    assert 0 < float(started.stdout) < 100
    assert resident_memory().peak_mib > 1024
    del starter_memory


def test_a_process_that_has_exited_has_no_memory():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert resident_memory(process.pid) is None
