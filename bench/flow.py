"""The whole flow, `segments run`, timed from outside and split by its own log lines.

Prefect logs every line with its time of day; the flow logs `stage=NAME seconds=S` per stage.
From those, one run's wall time splits into: start-up (interpreter, imports, and without
PREFECT_API_URL the wait for the temporary server `segments run` starts), the stages themselves,
Prefect's per-task overhead (the rest of the flow run: creating task runs, states, results) and
shutdown (stopping the temporary server, exit).
"""

import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.measure import run_process
from flows.serve import temporary_server, wait_until_healthy

BIN = Path(sys.executable).parent
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+\s*\| (.*)$")
STAGE = re.compile(r"stage=(\w+) seconds=([\d.]+)")
SERVER_WAIT = re.compile(r"Temporary Prefect server ready at \S+ after [\d.]+ s, ([\d.]+) s of them waited for it")


@dataclass(frozen=True)
class FlowTiming:
    """One `segments run`: its wall time split into parts, CPU time and peak RSS of the flow's process."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    startup_seconds: float      # process start to the flow run's first line, temporary server included
    server_wait_seconds: float  # of which waiting for the temporary server once imported; 0 against a running server
    stages: dict[str, float]
    task_overhead_seconds: float  # flow run time outside the stages
    shutdown_seconds: float       # flow run finished to process exit
    worker_peak_rss_mb: float | None  # the highest of the Dask workers' peaks, for a partitioned run


@dataclass(frozen=True)
class LogEvents:
    """When the moments that split a run happened, in seconds after the process started."""

    server_wait_seconds: float
    flow_began: float
    flow_finished: float
    stages: dict[str, float]


def parse_log(log: str, launched: datetime) -> LogEvents:
    """The split points of a run from Prefect's log lines (times of day, on or after `launched`)."""
    server_wait_seconds, flow_began, flow_finished, stages = 0.0, None, None, {}
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        at = _seconds_after(launched, match.group(1))
        message = match.group(2)
        if server_wait := SERVER_WAIT.search(message):
            server_wait_seconds = float(server_wait.group(1))
        elif "Beginning flow run" in message:
            flow_began = at
        elif message.startswith("Flow run") and "Finished in state" in message:
            flow_finished = at
        elif stage := STAGE.search(message):
            stages[stage.group(1)] = float(stage.group(2))
    if flow_began is None or flow_finished is None:
        raise ValueError(f"no flow run in the log:\n{log[-2000:]}")
    return LogEvents(server_wait_seconds, flow_began, flow_finished, stages)


def _seconds_after(launched: datetime, time_of_day: str) -> float:
    """Seconds from `launched` to the next occurrence of HH:MM:SS.mmm (a run may cross midnight)."""
    moment = datetime.combine(launched.date(), datetime.strptime(time_of_day, "%H:%M:%S.%f").time())
    if moment < launched - timedelta(seconds=1):  # log times are truncated to the millisecond
        moment += timedelta(days=1)
    return (moment - launched).total_seconds()


def time_flow(input_path: Path, env: dict[str, str], memory_cap_mb: float,
              command: Sequence[str] = ("run",)) -> FlowTiming:
    """Run `segments <command> --input <input_path>`, publishing to a temporary folder, and split its wall time."""
    with TemporaryDirectory(prefix="bench-flow-") as target:
        launched = datetime.now()
        run = run_process([str(BIN / "segments"), *command, "--input", str(input_path), "--target", target],
                          memory_cap_mb, env)
        manifests = list(Path(target).glob("runs/*/manifest.json"))
        metrics = json.loads(manifests[0].read_text())["metrics"] if manifests else {}
    if run.killed_over_mb is not None:
        raise MemoryError(f"killed: RSS over {run.killed_over_mb:,.0f} MB (peak {run.peak_rss_mb:,.0f} MB)")
    if run.returncode != 0:
        raise RuntimeError(f"segments run exited {run.returncode}: {run.stderr[-2000:]}")
    events = parse_log(run.stdout + run.stderr, launched)
    return FlowTiming(
        wall_seconds=run.wall_seconds,
        cpu_seconds=run.cpu_seconds,
        peak_rss_mb=run.peak_rss_mb,
        startup_seconds=events.flow_began,
        server_wait_seconds=events.server_wait_seconds,
        stages=events.stages,
        task_overhead_seconds=events.flow_finished - events.flow_began - sum(events.stages.values()),
        shutdown_seconds=run.wall_seconds - events.flow_finished,
        worker_peak_rss_mb=metrics.get("dask_worker_peak_rss_mib"),
    )


def flow_environment(home: Path, api_url: str | None) -> dict[str, str]:
    """This process's environment with Prefect's state in `home` and the API at api_url (None: temporary server)."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    # Every run computes its stages: otherwise the warm-up's persisted results would be reused.
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_TASKS_REFRESH_CACHE="true")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def running_prefect_server(home: Path) -> Iterator[tuple[str, float]]:
    """A `prefect server start` on a free loopback port: its API URL and how long it took to answer."""
    started = time.perf_counter()
    with temporary_server(flow_environment(home, None)) as server:
        wait_until_healthy(server.api_url, server.process)
        yield server.api_url, time.perf_counter() - started
