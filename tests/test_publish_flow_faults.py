"""Publishing failures inside a flow run, over real HTTP to moto: the S3 server restarting in the middle of a
full run, refused requests that must not be retried, and a secret key that must stay out of logs and artifacts."""

import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from unittest import mock
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import State
from prefect.context import TaskRunContext
from prefect.logging.handlers import APILogWorker

from flows.parameters import SegmentationParameters
from flows.segmentation import customer_segmentation, is_transient_failure
from flows.segmentation import publish_run as publish_task
from flows.serve import free_port
from tasks import publish
from tasks.publish import (
    DEFAULT_LINK_EXPIRY_SECONDS, MANIFEST_NAME, S3_MAX_ATTEMPTS, PublishedRun, S3Client, S3Settings, StoreError,
    keys_from_secret_blocks, run_key, without_query,
)
from tests import s3_server
from tests.prefect_api import flow_run_logs, task_run_counts
from tests.s3_server import moto_s3_server, new_bucket, s3_test_client
from tests.test_publish_faults import (
    ACCESS_KEY_ID, MANIFEST, PREFIX, RUN_ID, SECRET_ACCESS_KEY, SMALL_FILES, assert_published_correctly,
    aws_environment, stored_objects,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


# --- watching the publisher -----------------------------------------------------------


@contextmanager
def watching_publisher_requests(before_send) -> Iterator[None]:
    """Call `before_send(request, event_name)` before every request, retries included, of the publisher's clients."""
    make_client = publish.make_s3_client

    def make_watched_client(*args, **kwargs) -> S3Client:
        client = make_client(*args, **kwargs)
        client.meta.events.register("before-send.s3", before_send)
        return client

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish, "make_s3_client", make_watched_client)
        yield


class SentRequests:
    """The operation and signing credential of every request sent."""

    def __init__(self) -> None:
        self.operations: list[str] = []
        self.credentials: list[str] = []

    def __call__(self, request, event_name: str, **_) -> None:
        self.operations.append(event_name.rsplit(".", 1)[-1])
        authorization = request.headers.get("Authorization", b"")
        authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
        self.credentials += re.findall(r"Credential=([^/]+)/", authorization)


class CapturedLogs(logging.Handler):
    """Every record that reaches the root logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def capturing_logs() -> Iterator[CapturedLogs]:
    """Capture every log record, with the project's own loggers at DEBUG."""
    captured = CapturedLogs()
    project_loggers = [logging.getLogger(name) for name in ("tasks", "flows")]
    levels = [logger.level for logger in project_loggers]
    logging.getLogger().addHandler(captured)
    for logger in project_loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        logging.getLogger().removeHandler(captured)
        for logger, level in zip(project_loggers, levels):
            logger.setLevel(level)


# --- Prefect ------------------------------------------------------------------------


def prefect_logs(state: State) -> str:
    """Every log message the flow run sent to the Prefect API."""
    APILogWorker.drain_all(timeout=60)  # logs are shipped in the background
    return flow_run_logs(state.state_details.flow_run_id)


def prefect_artifacts(state: State) -> list[dict]:
    """Key, data and description of every artifact of the flow run."""
    artifact_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=artifact_filter)
    return [{"key": artifact.key, "data": artifact.data, "description": artifact.description} for artifact in artifacts]


# --- the S3 server restarts in the middle of a full flow run ---------------------------


class RestartableS3Server:
    """moto_server on one port that can be stopped and started again: empty, as moto keeps state in memory."""

    def __init__(self) -> None:
        self.port = free_port()
        self._running: ExitStack | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        running = ExitStack()
        # moto_s3_server() takes a port from free_port(); a restarted server must listen on the same one.
        with mock.patch.object(s3_server, "free_port", return_value=self.port):
            running.enter_context(moto_s3_server())
        self._running = running

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


class ServerOutage:
    """Stops the server before the publisher's `stop_at_put`-th PutObject; restarts it, with the bucket created
    again, at the first request of the publish task's next attempt."""

    def __init__(self, server: RestartableS3Server, bucket: str, stop_at_put: int) -> None:
        self.server = server
        self.bucket = bucket
        self.stop_at_put = stop_at_put
        self.puts = 0
        self.stopped_in_attempt: int | None = None
        self.requests_while_down = 0
        self.restarted = False

    def __call__(self, event_name: str, **_) -> None:
        attempt = TaskRunContext.get().task_run.run_count
        if self.stopped_in_attempt is None and event_name.endswith(".PutObject"):
            self.puts += 1
            if self.puts == self.stop_at_put:
                self.server.stop()
                self.stopped_in_attempt = attempt
        if self.stopped_in_attempt is None or self.restarted:
            return
        if attempt == self.stopped_in_attempt:
            self.requests_while_down += 1
        else:
            self.server.start()
            s3_test_client(self.server.endpoint_url).create_bucket(Bucket=self.bucket)
            self.restarted = True


@dataclass(frozen=True)
class OutageRun:
    state: State
    client: S3Client  # the test's own client, on the restarted server
    bucket: str
    outage: ServerOutage
    captured_logs: str
    prefect_logs: str
    artifacts: list[dict]
    task_run_counts: dict[str, int]


@pytest.fixture(scope="module")
def outage_run(prefect_server: None) -> Iterator[OutageRun]:
    server = RestartableS3Server()
    server.start()
    try:
        client = s3_test_client(server.endpoint_url)
        bucket = new_bucket(client)
        outage = ServerOutage(server, bucket, stop_at_put=4)
        params = SegmentationParameters(
            target=f"s3://{bucket}/{PREFIX}", run_id=RUN_ID, demo_lines=20_000, seed=7, retries=2,
            retry_delay_seconds=0,
        )
        with aws_environment(server.endpoint_url), watching_publisher_requests(outage), capturing_logs() as logs:
            state = customer_segmentation(params, return_state=True)
        yield OutageRun(
            state, client, bucket, outage, logs.text, prefect_logs(state), prefect_artifacts(state),
            task_run_counts(state.state_details.flow_run_id),
        )
    finally:
        server.stop()


def test_a_run_whose_s3_server_restarts_mid_publish_completes(outage_run: OutageRun) -> None:
    assert outage_run.state.is_completed(), outage_run.state.message
    assert outage_run.outage.restarted
    # The client retried the upload as often as it may, then the task failed and Prefect retried it.
    assert outage_run.outage.requests_while_down == S3_MAX_ATTEMPTS
    assert outage_run.task_run_counts["publish"] == 2


def test_after_the_restart_the_manifest_matches_every_stored_object(outage_run: OutageRun) -> None:
    manifest = assert_published_correctly(outage_run.client, outage_run.bucket)

    assert {"report.html", "segments.parquet", "profiles.csv"} <= {entry["name"] for entry in manifest["files"]}
    summary = outage_run.state.result()
    assert summary.manifest_url == f"s3://{outage_run.bucket}/{PREFIX}/{run_key(RUN_ID, MANIFEST_NAME)}"


def test_the_report_link_is_presigned_logged_without_its_signature_and_opens_the_report(
    outage_run: OutageRun,
) -> None:
    [link_artifact] = [artifact for artifact in outage_run.artifacts if artifact["key"] == "report"]
    [link] = re.findall(r"\]\((.+)\)$", link_artifact["data"])
    query = parse_qs(urlsplit(link).query)

    assert query["X-Amz-Expires"] == [str(DEFAULT_LINK_EXPIRY_SECONDS)]
    with urlopen(link) as response:
        assert response.read() == stored_objects(outage_run.client, outage_run.bucket)[run_key(RUN_ID, "report.html")]
    [signature] = query["X-Amz-Signature"]
    assert f"report={without_query(link)}" in outage_run.prefect_logs
    assert signature not in outage_run.prefect_logs
    assert signature not in outage_run.captured_logs


def test_the_secret_key_is_in_no_log_artifact_or_manifest(outage_run: OutageRun) -> None:
    manifest = stored_objects(outage_run.client, outage_run.bucket)[run_key(RUN_ID, MANIFEST_NAME)].decode()
    artifacts = json.dumps(outage_run.artifacts, default=str)
    # The captures hold the run's logs, so finding nothing in them means something.
    assert "stage=publish" in outage_run.captured_logs and "stage=publish" in outage_run.prefect_logs
    assert {artifact["key"] for artifact in outage_run.artifacts} >= {"run-summary", "segments", "report"}

    for text in (outage_run.captured_logs, outage_run.prefect_logs, artifacts, manifest):
        assert SECRET_ACCESS_KEY not in text


# --- permanent failures: no retries, a clear message -----------------------------------


@flow(name="publish-only")
def publish_only(target: str, s3: S3Settings) -> PublishedRun:
    """The segmentation flow's publish task alone, retried the way the flow retries it."""
    retried = publish_task.with_options(retries=2, retry_delay_seconds=0, retry_condition_fn=is_transient_failure)
    return retried(RUN_ID, target, SMALL_FILES, MANIFEST, s3=s3)


@pytest.fixture
def secret_blocks() -> Iterator[dict[str, str]]:
    """Prefect Secret blocks holding the test key pair, by S3Settings field."""
    suffix = uuid.uuid4().hex[:8]
    names = {"access_key_id_block": f"s3-access-key-id-{suffix}",
             "secret_access_key_block": f"s3-secret-access-key-{suffix}"}
    Secret(value=ACCESS_KEY_ID).save(names["access_key_id_block"])
    Secret(value=SECRET_ACCESS_KEY).save(names["secret_access_key_block"])
    yield names
    for name in names.values():
        Secret.delete(name)


def test_a_missing_secret_block_is_a_permanent_error_naming_it() -> None:
    settings = S3Settings(access_key_id_block="no-such-block", secret_access_key_block="no-such-block-either")

    with pytest.raises(StoreError, match="'no-such-block' was not found") as raised:
        keys_from_secret_blocks(settings)

    assert raised.value.retryable is False


def assert_failed_at_once(state: State, sent: SentRequests) -> None:
    assert state.is_failed()
    assert "retrying will not help" in state.message
    assert task_run_counts(state.state_details.flow_run_id) == {"publish": 1}
    [(_, most_attempts)] = Counter(sent.operations).most_common(1)
    assert most_attempts == 1, sent.operations


def test_a_missing_bucket_fails_at_once_naming_the_bucket() -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    sent = SentRequests()

    with moto_s3_server() as endpoint_url, aws_environment(), watching_publisher_requests(sent):
        state = publish_only(f"s3://{bucket}/{PREFIX}", S3Settings(endpoint_url=endpoint_url), return_state=True)

    assert_failed_at_once(state, sent)
    assert f"bucket {bucket!r} does not exist" in state.message


def test_refused_credentials_fail_at_once_and_the_secret_stays_out_of_the_error_and_logs(
    secret_blocks: dict[str, str],
) -> None:
    sent = SentRequests()

    with moto_s3_server(enforce_auth=True) as endpoint_url, aws_environment(with_keys=False):
        with watching_publisher_requests(sent), capturing_logs() as logs:
            settings = S3Settings(endpoint_url=endpoint_url, **secret_blocks)
            state = publish_only(f"s3://artifacts/{PREFIX}", settings, return_state=True)

    assert_failed_at_once(state, sent)
    assert "access to bucket 'artifacts' was denied" in state.message
    assert set(sent.credentials) == {ACCESS_KEY_ID}  # signed with the key pair from the Secret blocks
    for text in (state.message, logs.text, prefect_logs(state)):
        assert SECRET_ACCESS_KEY not in text


