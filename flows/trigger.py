"""`segments trigger`: start a run of the deployment customer-segmentation/one-off and, if asked, watch it end."""

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from flows.parameters import SegmentationParameters

DEPLOYMENT = "customer-segmentation/one-off"
POLL_SECONDS = 2.0
# A worker polls its pool every 10–15 s by default: a run still waiting well past that has no worker.
NO_WORKER_HINT_AFTER_SECONDS = 60.0
# The states of a run no worker has taken yet; AwaitingRetry and AwaitingConcurrencySlot are scheduled too, but taken.
WAITING_FOR_A_WORKER = ("Scheduled", "Late")


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` as (field name, value); the value is read as JSON when it is JSON, else kept as text."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def trigger(overrides: dict[str, Any], watch: bool) -> int:
    """Start a run with the deployment's parameters updated by `overrides`; print its URL and, with `watch`, its end."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if not settings.api.url:
        print("error: PREFECT_API_URL is not set; start the stack with `segments serve` and use the address it prints",
              file=sys.stderr)
        return 2
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(DEPLOYMENT)
        # Prefect replaces a flow parameter as a whole, so the deployment's `params` are completed here
        # and validated in full before anything is submitted.
        params = SegmentationParameters(**deployment.parameters.get("params", {}) | overrides)
        submitted = {"params": params.model_dump(mode="json", exclude_unset=True)}
        flow_run = run_deployment(deployment.id, parameters=submitted, timeout=0, as_subflow=False)
        print(f"Flow run {flow_run.name}: {settings.ui_url}/runs/flow-run/{flow_run.id}", flush=True)
        return wait_for_final_state(flow_run.id, deployment.work_pool_name) if watch else 0
    except ObjectNotFound:
        print(f"error: no deployment {DEPLOYMENT} at {settings.api.url}; deploy it with `segments serve` "
              "or `prefect --no-prompt deploy --all`", file=sys.stderr)
        return 1
    except PrefectHTTPStatusError as error:  # e.g. a deployment made from an older checkout, with another schema
        print(f"error: the API refused the run: {error}", file=sys.stderr)
        return 2
    except httpx.TransportError as error:
        print(f"error: cannot reach the Prefect API at {settings.api.url}: {error}", file=sys.stderr)
        return 1


def wait_for_final_state(flow_run_id: UUID, work_pool: str | None,
                         no_worker_hint_after_seconds: float = NO_WORKER_HINT_AFTER_SECONDS) -> int:
    """Print each state the run goes through until a final one; 0 if it Completed, else 1.

    A run that no worker starts waits for one indefinitely, as Prefect does: the command says so once.
    """
    from prefect.client.orchestration import get_client

    # Polling the run rather than following its events: `prefect flow-run watch` can replay old events.
    shown, hinted = None, False
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            state = flow_run.state
            if state.name != shown:
                print(f"  {state.name}", flush=True)
                shown = state.name
            if state.is_final():
                break
            waiting = state.name in WAITING_FOR_A_WORKER and waited_seconds(flow_run) >= no_worker_hint_after_seconds
            if waiting and not hinted:
                pool = f"the work pool {work_pool!r}" if work_pool else "the deployment's work pool"
                print(f"  No worker has started the run yet: is one polling {pool}? "
                      "`segments serve` starts one; this command keeps waiting (Ctrl-C leaves the run queued).",
                      flush=True)
                hinted = True
            time.sleep(POLL_SECONDS)
    if state.is_completed():
        return 0
    print(f"error: the run ended {state.name}: {state.message}", file=sys.stderr)
    return 1


def waited_seconds(flow_run) -> float:
    """How long the run has been due to start."""
    due = flow_run.expected_start_time or flow_run.created
    return (datetime.now(timezone.utc) - due).total_seconds()
