"""Run work in a fresh process and measure it: wall and CPU time of the work, peak RSS of the process.

A fresh process per run keeps one engine's memory from another's and makes peak RSS mean
something. The work times itself (imports and start-up are not its cost); the parent polls the
process's own peak RSS (VmHWM) and kills it if it grows past a cap, so a run that would exhaust the
shared machine is reported as such instead of taking it down.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bench.inputs import REPOSITORY
from tasks.memory import resident_memory

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Outcome:
    """What a worker task returns: a JSON-able summary, and a table the caller may ask to keep."""

    summary: dict
    table: pl.DataFrame


@dataclass(frozen=True)
class ProcessRun:
    """One finished (or killed) process: exit code, output, wall and CPU seconds, peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    killed_over_mb: float | None  # the cap, if the process was killed for exceeding it


def run_process(command: list[str], memory_cap_mb: float, env: dict[str, str] | None = None) -> ProcessRun:
    """Run `command` from the repository, polling its RSS; kill its process group past memory_cap_mb.

    Its peak RSS is its own (not its children's) as the last poll saw it, not wait4's ru_maxrss, which
    includes the peak of the process that started it (see tasks/memory.py): this one's few hundred MB.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPOSITORY, stdout=stdout, stderr=stderr, env=env,
                                   start_new_session=True)
        killed_over, peak_mb = None, 0.0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if memory := resident_memory(process.pid):
                peak_mb = memory.peak_mib
                if killed_over is None and memory.now_mib > memory_cap_mb:
                    os.killpg(process.pid, signal.SIGKILL)
                    killed_over = memory_cap_mb
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - started
        _stop_leftovers(process.pid)
        stdout.seek(0), stderr.seek(0)
        return ProcessRun(
            returncode=os.waitstatus_to_exitcode(status), stdout=stdout.read(), stderr=stderr.read(),
            wall_seconds=wall, cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=peak_mb, killed_over_mb=killed_over,
        )


def _stop_leftovers(group: int) -> None:
    """Kill whatever the process left running in its own process group (e.g. a server it started)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class WorkRun:
    """One run of a bench.worker task: the work's own wall and CPU time, the process's peak RSS."""

    wall_seconds: float | None
    cpu_seconds: float | None
    peak_rss_mb: float
    result: dict
    failure: str | None  # why there is no result: killed over the memory cap, or the error's last line


def run_work(task: str, memory_cap_mb: float, save_to: Path | None = None, **arguments) -> WorkRun:
    """Run the bench.worker task in a fresh interpreter and collect what it reports.

    With save_to, the task's table is written there as Parquet after the timing.
    """
    command = [sys.executable, "-m", "bench.worker", task, json.dumps(arguments), str(save_to or "")]
    run = run_process(command, memory_cap_mb)
    if run.killed_over_mb is not None:
        return WorkRun(None, None, run.peak_rss_mb, {}, f"killed: RSS over {run.killed_over_mb:,.0f} MB")
    if run.returncode != 0:
        last_line = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        return WorkRun(None, None, run.peak_rss_mb, {}, last_line)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    return WorkRun(report["wall_seconds"], report["cpu_seconds"], run.peak_rss_mb, report["result"], None)
