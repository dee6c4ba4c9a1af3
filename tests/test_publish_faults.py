"""Publishing to S3 when things go wrong, over real HTTP to moto: a flaky network, a lost answer, a killed
publisher; and the S3 settings: bucket creation, server-side encryption, multipart uploads.

Failures inside a flow run (a server restart, refused requests, secrets in logs) are in test_publish_flow_faults.py;
this module stays free of Prefect, so the publisher it starts in a child process is up in a second.
"""

import hashlib
import json
import multiprocessing
import os
import random
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from urllib.parse import urlsplit

import pytest

from tasks.publish import (
    LATEST_KEY, MANIFEST_NAME, MIB, ArtifactStore, S3Client, S3Settings, open_store, publish_run, run_key,
)
from tests.flaky_proxy import Fault, FlakyProxy, SeededFaults
from tests.s3_server import TEST_REGION, moto_s3_server, new_bucket, s3_test_client
from tests.test_publish import RecordingStore

pytestmark = pytest.mark.slow

ACCESS_KEY_ID = "AKIAFAULTTESTS000001"
SECRET_ACCESS_KEY = "fault-tests-secret/+never-in-logs"
PREFIX = "team/segments"
RUN_ID = "fault-run"
SMALL_FILES = {
    "segments.csv": b"CustomerID,segment\n12346,0\n12347,1\n",
    "report.html": b"<!DOCTYPE html><title>Segments</title>",
    "charts/k_distance.png": b"\x89PNG\r\n\x1a\n pretend png",
}
BIG_FILE = "quarantine.parquet"
FILES = {**SMALL_FILES, BIG_FILE: random.Random(7).randbytes(12 * MIB)}  # over the 8 MiB multipart threshold
MANIFEST = {"parameters": {"eps": 0.5}}


# --- S3 helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint_url:
        yield endpoint_url


def stored_objects(client: S3Client, bucket: str) -> dict[str, bytes]:
    """Every object under PREFIX, by its key relative to PREFIX."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key.removeprefix(f"{PREFIX}/"): client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def assert_published_correctly(client: S3Client, bucket: str, files: dict[str, bytes] | None = None) -> dict:
    """The run's manifest lists exactly the stored files (`files`, if given), each with its stored size and sha256."""
    objects = stored_objects(client, bucket)
    manifest_key = run_key(RUN_ID, MANIFEST_NAME)
    manifest = json.loads(objects[manifest_key])
    entries = {entry["key"]: entry for entry in manifest["files"]}
    assert set(objects) == set(entries) | {manifest_key, LATEST_KEY}
    for key, entry in entries.items():
        assert (entry["size"], entry["sha256"]) == (len(objects[key]), hashlib.sha256(objects[key]).hexdigest())
    if files is not None:
        assert {entry["name"]: objects[key] for key, entry in entries.items()} == files
    assert json.loads(objects[LATEST_KEY])["manifest"] == manifest_key
    return manifest


@contextmanager
def aws_environment(endpoint_url: str | None = None, with_keys: bool = True) -> Iterator[None]:
    """The test key pair (unless `with_keys` is False) and region in the standard AWS variables, nothing else."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_REGION", TEST_REGION)
        if with_keys:
            patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        if endpoint_url:
            patch.setenv("AWS_ENDPOINT_URL_S3", endpoint_url)
        yield


@pytest.fixture
def aws_keys_in_environment() -> Iterator[None]:
    with aws_environment():
        yield


# --- settings: bucket creation, encryption, multipart ----------------------------------


def test_a_missing_bucket_is_created_when_the_settings_allow_it(
    s3_endpoint: str, aws_keys_in_environment: None
) -> None:
    bucket = f"created-{uuid.uuid4().hex[:12]}"
    settings = S3Settings(endpoint_url=s3_endpoint, region="eu-west-1", create_bucket=True)

    publish_run(open_store(f"s3://{bucket}/{PREFIX}", settings=settings), RUN_ID, SMALL_FILES, MANIFEST)
    publish_run(open_store(f"s3://{bucket}/{PREFIX}", settings=settings), RUN_ID, SMALL_FILES, MANIFEST)

    client = s3_test_client(s3_endpoint)
    assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    assert_published_correctly(client, bucket, SMALL_FILES)


def test_objects_are_encrypted_and_big_ones_go_up_in_parts_verified_by_their_bytes(
    s3_endpoint: str, aws_keys_in_environment: None
) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)
    target = f"s3://{bucket}/{PREFIX}"
    settings = S3Settings(endpoint_url=s3_endpoint, server_side_encryption="AES256")

    publish_run(open_store(target, settings=settings), RUN_ID, FILES, MANIFEST)
    republished = RecordingStore(open_store(target, settings=settings))
    publish_run(republished, RUN_ID, FILES, MANIFEST)

    assert_published_correctly(client, bucket, FILES)
    heads = {key: client.head_object(Bucket=bucket, Key=f"{PREFIX}/{key}") for key in stored_objects(client, bucket)}
    assert {head["ServerSideEncryption"] for head in heads.values()} == {"AES256"}
    assert heads[run_key(RUN_ID, BIG_FILE)]["ETag"].endswith('-2"')  # 8 MiB and 4 MiB parts
    assert republished.put_keys == []  # the multipart object's bytes were recognised, not uploaded again


# --- a flaky network between the publisher and S3 --------------------------------------


def test_a_publish_through_a_network_that_fails_a_third_of_requests_completes_correctly(
    s3_endpoint: str, aws_keys_in_environment: None
) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)

    with FlakyProxy(urlsplit(s3_endpoint).port, SeededFaults(seed=5, share=0.35)) as proxy:
        settings = S3Settings(endpoint_url=proxy.endpoint_url)
        publish_run(open_store(f"s3://{bucket}/{PREFIX}", settings=settings), RUN_ID, FILES, MANIFEST)

    assert proxy.errors == []
    assert set(proxy.faults) == {Fault.NONE, Fault.INTERNAL_ERROR, Fault.DROP_REQUEST, Fault.DROP_RESPONSE}
    assert_published_correctly(client, bucket, FILES)


class LostCompletionAnswer:
    """Loses the answer to the first multipart completion and, as S3 does, answers the client's retry with
    NoSuchUpload, because that upload is complete already; forwards everything else."""

    def __init__(self) -> None:
        self.completions = 0

    def __call__(self, request_line: str) -> Fault:
        if not (request_line.startswith("POST ") and "uploadId=" in request_line):
            return Fault.NONE
        self.completions += 1
        return {1: Fault.DROP_RESPONSE, 2: Fault.NO_SUCH_UPLOAD}.get(self.completions, Fault.NONE)


def test_a_multipart_upload_whose_completion_answer_was_lost_is_verified_and_kept(
    s3_endpoint: str, aws_keys_in_environment: None
) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)

    with FlakyProxy(urlsplit(s3_endpoint).port, LostCompletionAnswer()) as proxy:
        settings = S3Settings(endpoint_url=proxy.endpoint_url)
        publish_run(open_store(f"s3://{bucket}/{PREFIX}", settings=settings), RUN_ID, FILES, MANIFEST)

    assert proxy.errors == []
    assert (proxy.faults[Fault.DROP_RESPONSE], proxy.faults[Fault.NO_SUCH_UPLOAD]) == (1, 1)
    assert_published_correctly(client, bucket, FILES)


# --- a publisher killed between the data files and the manifest ------------------------


class HangsAtTheManifest(RecordingStore):
    """Stores everything but the manifest; there it signals `reached` and waits to be killed."""

    def __init__(self, inner: ArtifactStore, reached: Event) -> None:
        super().__init__(inner)
        self.reached = reached

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.endswith(MANIFEST_NAME):
            self.reached.set()
            threading.Event().wait()
        super().put(key, data, content_type)


def publish_until_the_manifest(endpoint_url: str, bucket: str, files: dict[str, bytes], reached: Event) -> None:
    """Child process: publish `files` up to the manifest, then wait there to be killed."""
    store = open_store(f"s3://{bucket}/{PREFIX}", s3_client=s3_test_client(endpoint_url))
    publish_run(HangsAtTheManifest(store, reached), RUN_ID, files, MANIFEST)


def kill_a_publisher_at_the_manifest(endpoint_url: str, bucket: str, files: dict[str, bytes]) -> None:
    """Publish `files` as RUN_ID in a child process and kill it with SIGKILL as it is about to write the manifest."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, not a fork of pytest and its threads
    reached_manifest = spawn.Event()
    publisher = spawn.Process(target=publish_until_the_manifest, args=(endpoint_url, bucket, files, reached_manifest))

    publisher.start()
    try:
        assert reached_manifest.wait(timeout=300), "the publisher never got to the manifest"
    finally:
        publisher.kill()  # SIGKILL: no clean-up of any kind, as in a crash
        publisher.join()

    assert publisher.exitcode == -signal.SIGKILL


def test_a_publisher_killed_before_the_manifest_leaves_none_and_a_rerun_completes_it(s3_endpoint: str) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)

    kill_a_publisher_at_the_manifest(s3_endpoint, bucket, FILES)

    assert set(stored_objects(client, bucket)) == {run_key(RUN_ID, name) for name in FILES}
    rerun = RecordingStore(open_store(f"s3://{bucket}/{PREFIX}", s3_client=client))
    publish_run(rerun, RUN_ID, FILES, MANIFEST)
    assert rerun.put_keys == [run_key(RUN_ID, MANIFEST_NAME), LATEST_KEY]
    assert_published_correctly(client, bucket, FILES)


def test_a_republish_killed_before_its_manifest_leaves_none_and_a_rerun_replaces_the_first_publish(
    s3_endpoint: str,
) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)
    store = open_store(f"s3://{bucket}/{PREFIX}", s3_client=client)
    first = {**SMALL_FILES, "exports/segment_loyal.csv": b"CustomerID\n12346\n"}
    publish_run(store, RUN_ID, first, MANIFEST)
    # The same run resumed with other segments: changed files, and a CRM list under another name.
    second = {**{name: data + b" resumed" for name, data in SMALL_FILES.items()},
              "exports/segment_top-value_loyal.csv": b"CustomerID\n12346\n"}

    kill_a_publisher_at_the_manifest(s3_endpoint, bucket, second)

    # No manifest of the first publish listing checksums of replaced files, nor its CRM list left over.
    assert set(stored_objects(client, bucket)) == {run_key(RUN_ID, name) for name in second} | {LATEST_KEY}
    publish_run(store, RUN_ID, second, MANIFEST)
    assert_published_correctly(client, bucket, second)
