"""Reading back what a flow run sent to the Prefect API."""

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId


def flow_run_logs(flow_run: UUID) -> str:
    """Every log message of the flow run and its task runs, as the Prefect API holds them, page by page."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run]))
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(log_filter=log_filter, offset=len(messages)):
            messages += [log.message for log in page]
    return "\n".join(messages)
