"""Reading back what a flow run sent to the Prefect API."""

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId


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
