"""Child-process entry: `python -m bench.worker TASK JSON_ARGUMENTS [SAVE_TO]` runs one task and prints its timing.

The last line of stdout is JSON: the task's wall and CPU seconds (user + system, all threads)
and its summary. Only the task is timed, not the interpreter's start-up, the imports or the
writing of its table to SAVE_TO.
"""

import json
import resource
import sys
import time
from collections.abc import Callable

from bench import clustering, engines
from bench.measure import Outcome

TASKS: dict[str, Callable[..., Outcome]] = {
    "project": engines.run_project,
    "project-streaming": engines.run_project_streaming,
    "duckdb": engines.run_duckdb,
    "pandas": engines.run_pandas,
    "cluster": clustering.run_clustering,
}


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(task: str, arguments: str, save_to: str = "") -> None:
    """Run TASKS[task] with the JSON arguments, print the report line and keep its table if asked."""
    work = TASKS[task]
    wall_started, cpu_started = time.perf_counter(), cpu_seconds()
    outcome = work(**json.loads(arguments))
    report = {"wall_seconds": time.perf_counter() - wall_started, "cpu_seconds": cpu_seconds() - cpu_started,
              "result": outcome.summary}
    if save_to:
        outcome.table.write_parquet(save_to)
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
