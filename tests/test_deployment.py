"""The Prefect deployments as users run them: prefect.yaml, `segments serve`, `segments trigger`, the Prefect CLI."""

import argparse
import io
import json
import re
import sys
import threading
from uuid import UUID

import pytest
import yaml
from prefect import flow
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Scheduled

from flows.cli import main
from flows.parameters import AssignmentParameters, SegmentationParameters
from flows.serve import PROJECT_DIR, WORK_POOL
from flows.trigger import DEPLOYMENT, parse_override, wait_for_final_state

pytest_plugins = ["tests.prefect_stack"]

SEGMENTATION = "flows/segmentation.py:customer_segmentation"
DEPLOYED_FLOWS = [(SEGMENTATION, SegmentationParameters), ("flows/assign.py:assign_segments", AssignmentParameters)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eps=0.5", ("eps", 0.5)),
        ('countries=["United Kingdom"]', ("countries", ["United Kingdom"])),
        ("target=s3://bucket/segments", ("target", "s3://bucket/segments")),
        ("demo-lines=20000", ("demo_lines", 20000)),
        ("input=", ("input", "")),
    ],
)
def test_overrides_are_json_when_they_parse_as_json(text, expected):
    assert parse_override(text) == expected


def test_an_override_without_a_value_is_a_usage_error():
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE, got 'eps'"):
        parse_override("eps")


@pytest.mark.parametrize(("entrypoint", "model"), DEPLOYED_FLOWS)
def test_the_run_forms_start_from_the_flows_own_defaults(entrypoint, model):
    """prefect.yaml spells out defaults for the UI form; they must not drift from the parameter models."""
    params = deployment_config(entrypoint)["parameters"]["params"]
    assert params == {name: model.model_fields[name].get_default(call_default_factory=True) for name in params}


def test_the_monthly_schedule_is_defined_but_off():
    schedules = deployment_config(SEGMENTATION)["schedules"]
    assert schedules == [{"cron": "0 6 1 * *", "timezone": "UTC", "active": False}]


@pytest.mark.parametrize(("entrypoint", "model"), DEPLOYED_FLOWS)
def test_the_deployments_are_registered_as_prefect_yaml_says(prefect_stack, entrypoint, model):
    with prefect_stack.client() as client:
        deployment = next(deployment for deployment in client.read_deployments() if deployment.entrypoint == entrypoint)
    assert deployment.work_pool_name == WORK_POOL
    assert deployment.enforce_parameter_schema
    assert not any(schedule.active for schedule in deployment.schedules)
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_DIR)}}]
    described = deployment.parameter_openapi_schema["definitions"][model.__name__]["properties"]
    assert {name: bool(field.get("description")) for name, field in described.items()} == {
        name: True for name in model.model_fields}


def test_a_triggered_run_publishes_to_s3_and_shows_its_artifacts(prefect_stack):
    bucket = prefect_stack.bucket
    triggered = prefect_stack.run("segments", "trigger", "--watch", "--param", f"target=s3://{bucket}/e2e",
                                  "--param", "demo_lines=20000", "--param", 'countries=["United Kingdom"]')
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    assert triggered.stdout.splitlines()[-1].strip() == "Completed"
    flow_run_id = UUID(re.search(rf"{prefect_stack.ui_url}/runs/flow-run/([0-9a-f-]+)", triggered.stdout)[1])

    s3 = prefect_stack.s3()
    latest = json.loads(s3.get_object(Bucket=bucket, Key="e2e/latest.json")["Body"].read())
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"e2e/{latest['manifest']}")["Body"].read())
    assert manifest["parameters"]["countries"] == ["United Kingdom"]
    assert manifest["counts"]["removed_by_rule"]["country_not_selected"] > 0
    stored = {entry["Key"]: entry["Size"]
              for entry in s3.list_objects_v2(Bucket=bucket, Prefix="e2e/runs/")["Contents"]}
    assert {f"e2e/{file['key']}": file["size"] for file in manifest["files"]}.items() <= stored.items()
    assert "report.html" in {file["name"] for file in manifest["files"]}

    with prefect_stack.client() as client:
        flow_run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert flow_run.state.is_completed()
    assert flow_run.parameters["params"]["countries"] == ["United Kingdom"]
    assert {"run-summary", "segments", "report"} <= {artifact.key for artifact in artifacts}
    assert manifest["run_id"] in next(artifact.data for artifact in artifacts if artifact.key == "run-summary")


def test_prefect_deployment_run_refuses_bad_parameters_before_a_run_exists(prefect_stack):
    with prefect_stack.client() as client:
        runs_before = client.count_flow_runs()
        refused = prefect_stack.run("prefect", "deployment", "run", DEPLOYMENT, "--param", 'params={"eps": -1}')
        assert client.count_flow_runs() == runs_before
    assert refused.returncode == 1
    # Rich wraps the message at the terminal width; joined again here.
    assert "Validation failed for field 'params.eps'" in " ".join(refused.stdout.split())


def test_the_api_refuses_unknown_parameters_before_a_run_exists(prefect_stack):
    with prefect_stack.client() as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        runs_before = client.count_flow_runs()
        with pytest.raises(PrefectHTTPStatusError, match="'colour' was unexpected"):
            client.create_flow_run_from_deployment(deployment.id, parameters={"params": {"colour": "red"}})
        assert client.count_flow_runs() == runs_before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eps=-1", "Input should be greater than 0"),
        # The API cannot see this one: the flow's JSON schema does not list the known features.
        ('features=["Shoe size"]', "Input should be 'Recency'"),
    ],
)
def test_segments_trigger_refuses_bad_parameters_before_submitting(prefect_stack, override, message, capsys):
    with prefect_stack.client() as client, temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}):
        runs_before = client.count_flow_runs()
        assert main(["trigger", "--param", override]) == 2
        assert client.count_flow_runs() == runs_before
    assert message in capsys.readouterr().err


class ShownLines(io.StringIO):
    """Standard output that tells when a line holding `awaited` has been printed."""

    def __init__(self, awaited: str) -> None:
        super().__init__()
        self.awaited, self.shown = awaited, threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.awaited in self.getvalue():
            self.shown.set()
        return written


def test_watching_a_run_no_worker_starts_says_so_once_and_keeps_waiting(prefect_stack, monkeypatch):
    """A run outside any deployment: no worker will ever start it, as if the pool had none."""
    with prefect_stack.client() as client:
        flow_run = client.create_flow_run(flow(name="waits-for-a-worker")(lambda: None), state=Scheduled())
    output = ShownLines("No worker has started the run yet")
    monkeypatch.setattr(sys, "stdout", output)

    def cancel_once_the_hint_is_shown() -> None:
        output.shown.wait(timeout=60)  # cancelled even without it, so that the watch ends and the test fails
        with prefect_stack.client() as client:
            client.set_flow_run_state(flow_run.id, Cancelled(), force=True)

    canceller = threading.Thread(target=cancel_once_the_hint_is_shown)
    canceller.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}):
            ended = wait_for_final_state(flow_run.id, "the-pool", no_worker_hint_after_seconds=0)
    finally:
        canceller.join()
    shown = output.getvalue()
    assert ended == 1
    assert shown.count("No worker has started the run yet: is one polling the work pool 'the-pool'?") == 1
    assert shown.split()[0] == "Scheduled" and shown.split()[-1] == "Cancelled"


def deployment_config(entrypoint: str) -> dict:
    """The entry in prefect.yaml that deploys this flow."""
    project = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())
    return next(deployment for deployment in project["deployments"] if deployment["entrypoint"] == entrypoint)
