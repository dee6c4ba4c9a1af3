"""The whole flow in-process on small generated data, against a temporary Prefect API."""

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from prefect.client.orchestration import get_client

from botocore.exceptions import EndpointConnectionError
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.parameters import SegmentationParameters
from flows.segmentation import customer_segmentation, stage_options
from schemas import CustomerFeatures, SegmentAssignments
from tasks.errors import InputError
from tasks.generate import write_generated
from tasks.sources import TransientInputError
from tests.prefect_api import task_run_counts
from tests.s3_server import moto_s3_server, s3_test_client, use_test_credentials_only

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    target = tmp_path_factory.mktemp("artifacts")
    params = SegmentationParameters(target=str(target), run_id="test-run", demo_lines=20_000, seed=7)
    state = customer_segmentation(params, return_state=True)
    return state, target / "runs" / "test-run", target


def test_run_completes_and_reconciles(finished_run):
    state, run_dir, _ = finished_run
    assert state.is_completed(), state.message
    summary = state.result()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["raw_rows"] == counts["clean_rows"] + counts["quarantined_rows"]
    assert counts["quarantined_rows"] == sum(counts["removed_by_rule"].values())
    assert (summary.raw_rows, summary.clean_rows, summary.customers) == (
        counts["raw_rows"], counts["clean_rows"], counts["customers"])
    assert pl.read_parquet(run_dir / "quarantine.parquet").height == counts["quarantined_rows"]


def test_manifest_lists_every_file_with_its_checksum(finished_run):
    _, run_dir, target = finished_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    published = {path.relative_to(run_dir).as_posix() for path in run_dir.rglob("*") if path.is_file()}
    assert {entry["name"] for entry in manifest["files"]} == published - {"manifest.json"}
    for entry in manifest["files"]:
        data = (run_dir / entry["name"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    assert {"report.html", "segments.parquet", "segments.csv", "profiles.csv", "quality.json"} <= published
    assert any(name.startswith("charts/") for name in published)
    assert manifest["parameters"]["seed"] == 7
    assert set(manifest["versions"]) >= {"prefect", "polars", "pandera", "scikit-learn"}
    assert json.loads((target / "latest.json").read_text())["run_id"] == "test-run"


def test_segments_file_carries_features_and_assignments(finished_run):
    _, run_dir, _ = finished_run
    segments = pl.read_parquet(run_dir / "segments.parquet")
    CustomerFeatures.validate(segments.select(list(CustomerFeatures.to_schema().columns)))
    SegmentAssignments.validate(segments.select(list(SegmentAssignments.to_schema().columns)))
    profiles = pl.read_csv(run_dir / "profiles.csv")
    assert profiles["customers"].sum() == segments.height
    assert set(profiles["segment_name"]) == set(segments["segment_name"])


def test_planted_archetypes_are_recovered(finished_run):
    _, run_dir, _ = finished_run
    metrics = json.loads((run_dir / "manifest.json").read_text())["metrics"]
    assert metrics["ari_vs_planted"] >= 0.9
    assert metrics["segments"] >= 4


def test_prefect_artifacts_describe_the_run(finished_run):
    state, _, _ = finished_run
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert {artifact.key for artifact in artifacts} == {"run-summary", "segments", "report"}


@pytest.mark.slow
def test_an_s3_input_is_read_and_published_through_the_runs_s3_endpoint_parameter(tmp_path, monkeypatch):
    transactions, _ = write_generated(tmp_path, 20_000, seed=7)
    use_test_credentials_only(monkeypatch)
    with moto_s3_server() as endpoint_url:
        client = s3_test_client(endpoint_url)
        client.create_bucket(Bucket="segments")
        client.upload_file(str(transactions), "segments", "exports/lines.parquet")
        state = customer_segmentation(SegmentationParameters(
            input="s3://segments/exports/lines.parquet", target="s3://segments/out", run_id="from-s3",
            s3_endpoint_url=endpoint_url, retries=0,
        ), return_state=True)
        assert state.is_completed(), state.message
        client.head_object(Bucket="segments", Key="out/runs/from-s3/manifest.json")


def test_bad_input_fails_the_run_at_once_with_the_reason(tmp_path):
    params = SegmentationParameters(input=str(tmp_path / "missing.parquet"), target=str(tmp_path), retries=3,
                                    retry_delay_seconds=0)
    state = customer_segmentation(params, return_state=True)
    assert state.is_failed()
    assert "missing.parquet: no such file" in state.message
    assert task_run_counts(state.state_details.flow_run_id) == {"ingest": 1}
    assert not (Path(tmp_path) / "runs").exists()


def test_a_broken_clean_contract_fails_the_run_and_publishes_the_failure_cases(tmp_path, monkeypatch):
    import tasks.clean

    # Without the price rule, the demo data's free lines reach the clean contract, which refuses them.
    monkeypatch.setattr(tasks.clean, "RULES", tuple(r for r in tasks.clean.RULES if r.name != "non_positive_price"))
    state = customer_segmentation(SegmentationParameters(target=str(tmp_path), demo_lines=5_000, retries=0),
                                  return_state=True)
    assert state.is_failed()
    assert "CleanTransactions contract" in state.message and "'UnitPrice' fails greater_than(0)" in state.message
    assert "Traceback" not in state.message
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    failures = next(artifact for artifact in artifacts if artifact.key == "clean-contract-failures")
    assert "UnitPrice" in str(failures.data)
    assert not (tmp_path / "runs").exists()


FAILURES = {
    "a bug": (ValueError("unexpected value"), 1), "a missing key": (KeyError("Amount"), 1),
    "a missing file": (FileNotFoundError("work/part-00001.parquet"), 1), "bad input": (InputError("bad input"), 1),
    "a timeout": (TimeoutError("timed out"), 3), "a refused connection": (ConnectionRefusedError(), 3),
    "S3 out of reach": (EndpointConnectionError(endpoint_url="http://minio:9000"), 3),
    "input that may come back": (TransientInputError("HTTP 503"), 3),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_stage_is_retried_only_after_a_failure_that_may_pass(failure):
    error, runs = FAILURES[failure]
    attempts = []

    @task(cache_policy=NO_CACHE)
    def failing_stage() -> None:
        attempts.append(error)
        raise error

    @flow
    def one_stage() -> None:
        failing_stage.with_options(**stage_options(SegmentationParameters(retries=2, retry_delay_seconds=0)))()

    assert one_stage(return_state=True).is_failed()
    assert len(attempts) == runs
