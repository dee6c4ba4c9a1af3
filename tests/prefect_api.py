"""Reading back what a flow run sent to the Prefect API."""

import time
from collections.abc import Callable
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId,
)
from prefect.client.schemas.objects import TaskRun

# Task run states reach the API as events, which Prefect's server records shortly after the flow has moved on
# (or later, when a busy database put them back); this only bounds a hang.
API_WAIT_SECONDS = 120


def flow_run_of(flow_name: str, run_id: str) -> UUID:
    """The id of the run of `flow_name` whose parameters have this run id."""
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    [flow_run] = [run for run in flow_runs if run.parameters["params"]["run_id"] == run_id]
    return flow_run.id


def flow_run_logs(flow_run: UUID) -> str:
    """Every log message of the flow run and its task runs, as the Prefect API holds them, page by page."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(log_filter=log_filter, offset=len(messages)):
            messages += [log.message for log in page]
    return "\n".join(messages)


def all_ended(task_runs: dict[str, TaskRun]) -> bool:
    """Whether there are task runs and every one has ended."""
    return bool(task_runs) and all(run.state is not None and run.state.is_final() for run in task_runs.values())


def task_runs(flow_run: UUID, until: Callable[[dict[str, TaskRun]], bool] = all_ended) -> dict[str, TaskRun]:
    """The flow run's task runs by task name, read again until `until` holds of them."""
    deadline = time.monotonic() + API_WAIT_SECONDS
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run])))
            by_task = {run.name.rsplit("-", 1)[0]: run for run in runs}
            if until(by_task) or time.monotonic() > deadline:
                return by_task
            time.sleep(0.1)


def task_run_counts(flow_run: UUID) -> dict[str, int]:
    """How often each task of the flow run ran, by task name, once every one has ended."""
    return {name: run.run_count for name, run in task_runs(flow_run).items()}
