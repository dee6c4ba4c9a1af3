"""No credential in what a run shows: the `segments` script runs both flows against S3 (moto over real HTTP)
with a distinctive key pair in its environment; then its output, every log and artifact of both flow runs and
every published object are searched for the keys and for presigned-URL signatures.

tests/test_publish_flow_faults.py searches an in-process run of customer-segmentation for the secret key; this
adds the console script's own output, the assign-segments flow, every published object, the access key id and
signatures.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Artifact
from prefect.settings import PREFECT_API_URL

from tasks.generate import write_generated
from tests.prefect_api import flow_run_logs, flow_run_of
from tests.s3_server import TEST_REGION, moto_s3_server, s3_test_client

pytestmark = pytest.mark.slow

SEGMENTS = Path(sys.executable).parent / "segments"
ACCESS_KEY_ID = "AKIASCANNEDFORLEAKS1"
SECRET_ACCESS_KEY = "scanned/For+Leaks=0123456789abcdefghijklmnopqrst"
BUCKET = "segments"
TARGET = f"s3://{BUCKET}/team"
RUN_IDS = {"customer-segmentation": "scan-segments", "assign-segments": "scan-assign"}
# The value of X-Amz-Signature= (SigV4) or Signature= (SigV2) in a presigned URL.
SIGNATURE = re.compile(r"Signature=([^&\s\"'<>)\]]+)")


@dataclass(frozen=True)
class Scanned:
    """Every text the runs showed, by where it was shown, and the presigned report link."""

    texts: dict[str, str]
    report_link: str


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Scanned:
    root = tmp_path_factory.mktemp("secrets")
    new_export, _ = write_generated(root / "input", 20_000, seed=5)
    texts = {}
    with moto_s3_server() as endpoint_url:
        client = s3_test_client(endpoint_url)
        client.create_bucket(Bucket=BUCKET)
        environment = script_environment(endpoint_url, root)
        for command in (
            ["run", "--target", TARGET, "--run-id", RUN_IDS["customer-segmentation"], "--demo-lines", "20000"],
            ["assign", "--model", f"{TARGET}/runs/{RUN_IDS['customer-segmentation']}", "--input", str(new_export),
             "--target", TARGET, "--run-id", RUN_IDS["assign-segments"]],
        ):
            finished = subprocess.run([str(SEGMENTS), *command], capture_output=True, text=True, env=environment,
                                      timeout=600)
            assert finished.returncode == 0, finished.stdout + finished.stderr
            texts[f"segments {command[0]}: stdout"] = finished.stdout
            texts[f"segments {command[0]}: stderr"] = finished.stderr
        for key in client.list_objects_v2(Bucket=BUCKET)["Contents"]:
            body = client.get_object(Bucket=BUCKET, Key=key["Key"])["Body"].read()
            texts[f"s3://{BUCKET}/{key['Key']}"] = body.decode("latin-1")  # any byte, so binary files are searched too
    report_link = ""
    for flow_name, run_id in RUN_IDS.items():
        flow_run = flow_run_of(flow_name, run_id)
        texts[f"{flow_name} logs"] = flow_run_logs(flow_run)
        for artifact in artifacts_of(flow_run):
            if artifact.key == "report":
                [report_link] = re.findall(r"\]\((.+)\)$", artifact.data)
                texts[f"{flow_name} artifact report, without its link"] = artifact.data.replace(report_link, "")
            else:
                texts[f"{flow_name} artifact {artifact.key}"] = str(artifact.data)
            texts[f"{flow_name} artifact {artifact.key}: description"] = artifact.description or ""
    return Scanned(texts, report_link)


def script_environment(endpoint_url: str, root: Path) -> dict[str, str]:
    """The test key pair and S3 endpoint in the standard AWS variables, nothing else of AWS; Prefect kept apart."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return environment | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_REGION": TEST_REGION,
        "AWS_ENDPOINT_URL_S3": endpoint_url, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(root / "results"),
    }


def artifacts_of(flow_run: UUID) -> list[Artifact]:
    artifact_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]))
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=artifact_filter)


def test_the_search_covers_both_runs_logs_artifacts_and_published_files(scanned: Scanned) -> None:
    for flow_name in RUN_IDS:
        assert "stage=publish" in scanned.texts[f"{flow_name} logs"]
        assert f"{flow_name} artifact run-summary" in scanned.texts
    assert "stage=cluster" in scanned.texts["segments run: stderr"] + scanned.texts["segments run: stdout"]
    for run_id in RUN_IDS.values():
        assert f"s3://{BUCKET}/team/runs/{run_id}/manifest.json" in scanned.texts


def test_the_secret_key_is_shown_nowhere(scanned: Scanned) -> None:
    for where, text in {**scanned.texts, "the report link": scanned.report_link}.items():
        assert SECRET_ACCESS_KEY not in text, where


def test_the_key_id_and_signatures_are_shown_only_in_the_presigned_report_link(scanned: Scanned) -> None:
    # The link artifact exists to open the report from the UI: a presigned URL names the key id and is signed.
    [signature] = parse_qs(urlsplit(scanned.report_link).query)["X-Amz-Signature"]
    assert f"Credential={ACCESS_KEY_ID}" in scanned.report_link
    for where, text in scanned.texts.items():
        assert ACCESS_KEY_ID not in text, where
        assert signature not in text, where
        assert SIGNATURE.search(text) is None, where
