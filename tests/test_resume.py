"""Resumable runs: stage results persist across runs, so a rerun recomputes only what is missing or changed.

The runs share one input file, target and result storage, and report to the session's test API, whose task
run states tell a reused stage ("Cached") from a computed one ("Completed"). The killed run, its rerun and the
full run it is compared with are the `segments` console script in a subprocess with its own Prefect home;
the runs with changed parameters run in-process, which saves each the several seconds a process takes to start.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import TaskRun
from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

from flows import segmentation
from flows.parameters import SegmentationParameters
from flows.segmentation import customer_segmentation, ingest_cache_key, local_file_states, stage_options
from tasks.generate import write_generated
from tests.prefect_api import all_ended, flow_run_of, task_runs

pytestmark = pytest.mark.slow

SEGMENTS = Path(sys.executable).parent / "segments"
FLOW = "customer-segmentation"
STAGES = ("ingest", "clean", "features", "cluster", "report", "publish")
UPSTREAM = ("ingest", "clean", "features")
# The killed run's cluster stage has to outlast the API's news that it started (task states arrive as events,
# late on a busy machine), so it refits four times as often; the kill saves waiting for them.
KILLED_RUN_RESAMPLES = 200
# Compared as numbers, not bytes: build_features sums in an order that varies from call to call, so any two
# runs differ in the last bits of the money features, which can reorder customers tied on them in these ranks.
RANK_BASED = ("risk_score", "risk", "risk_low", "risk_medium", "risk_high")


@dataclass(frozen=True)
class Workspace:
    """One input file, one target and one result storage shared by every run of the module."""

    input: Path
    target: Path
    results: Path
    environment: dict[str, str]  # of the console script

    def command(self, run_id: str, *flags: str) -> list[str]:
        return [str(SEGMENTS), "run", "--input", str(self.input), "--target", str(self.target), "--run-id", run_id,
                *flags]

    def run_script(self, run_id: str, *flags: str) -> dict[str, str]:
        """Run the console script to the end; the state name of each stage."""
        finished = subprocess.run(self.command(run_id, *flags), capture_output=True, text=True,
                                  env=self.environment, timeout=600)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        return final_task_states(run_id)

    def run_flow(self, run_id: str, **changes) -> dict[str, str]:
        """Run the flow in this process with the script's parameters and `changes`; the state name of each stage."""
        params = SegmentationParameters(**{"input": str(self.input), "target": str(self.target), "run_id": run_id,
                                           **changes})
        with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: self.results}):
            state = customer_segmentation(params, return_state=True)
        assert state.is_completed(), state.message
        return final_task_states(run_id)

    def published(self, run_id: str, name: str) -> Path:
        return self.target / "runs" / run_id / name


def task_states(flow_run: UUID, until: Callable[[dict[str, TaskRun]], bool]) -> dict[str, str]:
    """The state name of each stage of the flow run, read again until `until` holds of its task runs."""
    return {stage: run.state.name for stage, run in task_runs(flow_run, until).items()}


def final_task_states(run_id: str) -> dict[str, str]:
    """The state name of each stage of a finished run, once the API has recorded every one's end."""
    return task_states(flow_run_of(FLOW, run_id), until=lambda runs: set(runs) == set(STAGES) and all_ended(runs))


def reusing(*cached: str) -> dict[str, str]:
    """What a run's stages should show: "Cached" for the `cached` ones, "Completed" for the rest."""
    return {stage: "Cached" if stage in cached else "Completed" for stage in STAGES}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Workspace:
    root = tmp_path_factory.mktemp("resume")
    transactions, _ = write_generated(root / "input", 100_000, seed=3)
    environment = {
        **os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(root / "results"),
    }
    return Workspace(transactions, root / "artifacts", root / "results", environment)


@pytest.fixture(scope="module")
def killed_run(workspace: Workspace) -> dict[str, str]:
    """Stage states of a run SIGKILLed while its cluster stage runs."""
    process = subprocess.Popen(workspace.command("killed", "--stability-resamples", str(KILLED_RUN_RESAMPLES)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=workspace.environment)
    try:
        read_until(process, "stage=features")
        flow_run = flow_run_of(FLOW, "killed")
        task_states(flow_run, until=lambda runs: "cluster" in runs and runs["cluster"].state.is_running())
    finally:
        process.kill()  # SIGKILL: the run gets no chance to finish its stage or record its end
        process.wait()
        process.stdout.close()
    return task_states(flow_run, until=lambda runs: all(
        stage in runs and runs[stage].state.is_completed() for stage in UPSTREAM))


def read_until(process: subprocess.Popen, marker: str) -> None:
    """Read the process's output line by line up to a line holding `marker`; fail with the output if it ends first."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return
    pytest.fail(f"the run ended before logging {marker!r}:\n{''.join(lines)}")


@pytest.fixture(scope="module")
def resumed_run(workspace: Workspace, killed_run: dict[str, str]) -> dict[str, str]:
    return workspace.run_script("resumed")


@pytest.fixture(scope="module")
def refreshed_run(workspace: Workspace, resumed_run: dict[str, str]) -> dict[str, str]:
    return workspace.run_script("refreshed", "--refresh-cache", "true")


def test_the_first_run_was_killed_in_the_cluster_stage(workspace: Workspace, killed_run: dict[str, str]) -> None:
    assert killed_run == {"ingest": "Completed", "clean": "Completed", "features": "Completed", "cluster": "Running"}
    assert not (workspace.target / "runs" / "killed").exists()


def test_the_rerun_reuses_ingest_clean_and_features_and_computes_the_rest(resumed_run: dict[str, str]) -> None:
    assert resumed_run == reusing(*UPSTREAM)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_of(FLOW, "resumed")])))
    assert {artifact.key for artifact in artifacts} == {"run-summary", "segments", "report"}


def test_refresh_cache_recomputes_every_stage(refreshed_run: dict[str, str]) -> None:
    assert refreshed_run == reusing()


def test_the_resumed_run_publishes_what_a_full_run_does(
    workspace: Workspace, resumed_run: dict[str, str], refreshed_run: dict[str, str],
) -> None:
    assert workspace.published("resumed", "quality.json").read_bytes() == workspace.published(
        "refreshed", "quality.json").read_bytes()
    for name, read in (("segments.parquet", pl.read_parquet), ("profiles.csv", pl.read_csv)):
        resumed, full = (read(workspace.published(run, name)).drop(RANK_BASED, strict=False)
                         for run in ("resumed", "refreshed"))
        assert_frame_equal(resumed, full, check_exact=False, rel_tol=1e-9)


def test_a_new_eps_refits_the_reused_features(workspace: Workspace, resumed_run: dict[str, str]) -> None:
    assert workspace.run_flow("new-eps", eps=0.6) == reusing(*UPSTREAM)


def test_a_new_country_filter_cleans_the_reused_input_again(workspace: Workspace, resumed_run: dict[str, str]) -> None:
    assert workspace.run_flow("uk-only", countries=["United Kingdom"]) == reusing("ingest")


def test_a_rewritten_input_file_is_read_again(
    workspace: Workspace, resumed_run: dict[str, str], tmp_path: Path,
) -> None:
    # A copy of its own to rewrite: the module's other runs read the shared input as it was.
    own_input = tmp_path / workspace.input.name
    shutil.copy2(workspace.input, own_input)
    assert workspace.run_flow("copied-input", input=str(own_input)) == reusing("clean", "features", "cluster")
    pl.read_parquet(own_input).head(90_000).write_parquet(own_input)

    assert workspace.run_flow("rewritten-input", input=str(own_input)) == reusing()


def test_an_edit_to_the_stage_code_computes_every_stage_again(
    workspace: Workspace, resumed_run: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The task wrappers' source (TASK_SOURCE) does not show an edit in tasks/ or schemas/; this digest does.
    assert workspace.run_flow("same-code") == reusing(*UPSTREAM, "cluster")
    monkeypatch.setattr(segmentation, "stage_code_digest", lambda: "tasks/ as edited")
    assert workspace.run_flow("edited-code") == reusing()


def test_a_remote_input_is_downloaded_again_on_every_run() -> None:
    assert ingest_cache_key(None, {"source": "s3://bucket/lines.parquet", "column_mapping": {}}) is None


def test_a_file_added_to_a_folder_input_changes_its_state(tmp_path: Path) -> None:
    (tmp_path / "2011-01.csv").write_text("InvoiceNo\n")
    before = local_file_states(str(tmp_path))
    (tmp_path / "2011-02.csv").write_text("InvoiceNo\n")

    assert local_file_states(str(tmp_path)) != before
    assert local_file_states(str(tmp_path / "*.csv")) == local_file_states(str(tmp_path))


def test_refresh_cache_off_leaves_prefects_own_setting_in_force() -> None:
    # A task option of False would override PREFECT_TASKS_REFRESH_CACHE=true; None defers to it.
    assert stage_options(SegmentationParameters())["refresh_cache"] is None
    assert stage_options(SegmentationParameters(refresh_cache=True))["refresh_cache"] is True
