"""Publish stage: layout, order, checksums, idempotence and errors, on disk and on a real moto S3 server."""

import base64
import hashlib
import json
import logging
import pickle
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from flows.serve import free_port
from tasks.publish import (
    LATEST_KEY,
    ArtifactStore,
    LocalTarget,
    S3Target,
    StoreError,
    content_type_for,
    make_s3_client,
    open_store,
    parse_target,
    publish_run,
    run_key,
    validate_run_id,
)
from tests.s3_server import (
    assert_names_every_way_to_give_credentials, moto_s3_server, new_bucket, s3_test_client, use_no_credentials,
)

RUN_ID = "2026-11-26T20-51-30_ab12"
OTHER_RUN_ID = "2026-11-27T08-00-00_cd34"
FILES = {
    "segments.parquet": b"PAR1 pretend parquet bytes PAR1",
    "report.html": "<h1>Segments — December</h1>".encode(),
    "metrics.json": b'{"silhouette": 0.41}',
    "charts/k_distance.png": b"\x89PNG\r\n\x1a\n pretend png",
    "exports/segment_loyal.csv": b"CustomerID,Segment\n12346,loyal\n",
    "exports/segment_lapsed.csv": b"CustomerID,Segment\n12347,lapsed\n",
}
MANIFEST = {"input": {"source": "online_retail.csv", "sha256": "ab" * 32}, "parameters": {"eps": 0.5}}
MANIFEST_KEY = run_key(RUN_ID, "manifest.json")
RUN_KEYS = {run_key(RUN_ID, name) for name in FILES}

ACCESS_KEY_ID = "AKIAPUBLISHTESTS0001"
SECRET_ACCESS_KEY = "publish-tests-secret-b64+/does-not-leak"
S3_PREFIX = "team/segments"


# --- targets: the store under test plus an independent view of what it holds ----------


@dataclass
class PublishTarget:
    store: ArtifactStore
    read: Callable[[str], bytes | None]  # key -> stored bytes, without going through the store
    keys: Callable[[], set[str]]  # every key stored under the target


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> PublishTarget:
    if request.param == "local":
        return local_target(tmp_path / "artifacts")
    return s3_target(request.getfixturevalue("s3_endpoint"))


def local_target(root: Path) -> PublishTarget:
    def read(key: str) -> bytes | None:
        path = root / key
        return path.read_bytes() if path.is_file() else None

    def keys() -> set[str]:
        return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}

    return PublishTarget(open_store(str(root)), read, keys)


def s3_target(endpoint_url: str) -> PublishTarget:
    client = s3_test_client(endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)
    bucket = new_bucket(client)

    def read(key: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=f"{S3_PREFIX}/{key}")["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def keys() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{S3_PREFIX}/")
        return {item["Key"].removeprefix(f"{S3_PREFIX}/") for page in pages for item in page.get("Contents", [])}

    return PublishTarget(open_store(f"s3://{bucket}/{S3_PREFIX}", s3_client=client), read, keys)


# --- store wrappers that watch or break the real store ---------------------------------


class RecordingStore:
    """Passes every call to `inner` and records the keys it is asked to put, in order."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.put_keys: list[str] = []

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.put_keys.append(key)
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class InterruptedStore(RecordingStore):
    """Fails like a dropped connection once `allowed_puts` objects have been stored."""

    def __init__(self, inner: ArtifactStore, allowed_puts: int) -> None:
        super().__init__(inner)
        self.allowed_puts = allowed_puts

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if len(self.put_keys) == self.allowed_puts:
            raise ConnectionError("simulated network drop")
        super().put(key, data, content_type)


class CorruptingStore(RecordingStore):
    """Stores other bytes than it is given, like corruption on the way."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        super().put(key, data + b" corrupted", content_type)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_no_credentials(text: str) -> None:
    assert SECRET_ACCESS_KEY not in text
    assert ACCESS_KEY_ID not in text


def assert_error_free_of_credentials(error: BaseException) -> None:
    assert_no_credentials("".join(traceback.format_exception(error)))


# --- both targets ----------------------------------------------------------------------


def test_files_are_written_first_then_the_manifest_then_latest(target: PublishTarget) -> None:
    store = RecordingStore(target.store)

    publish_run(store, RUN_ID, FILES, MANIFEST)

    assert set(store.put_keys[:-2]) == RUN_KEYS
    assert store.put_keys[-2:] == [MANIFEST_KEY, LATEST_KEY]
    # Exactly the layout: no temp files or other leftovers.
    assert target.keys() == RUN_KEYS | {MANIFEST_KEY, LATEST_KEY}
    for name, data in FILES.items():
        assert target.read(run_key(RUN_ID, name)) == data


def test_manifest_lists_every_file_with_its_stored_size_and_sha256(target: PublishTarget) -> None:
    publish_run(target.store, RUN_ID, FILES, MANIFEST)

    manifest_bytes = target.read(MANIFEST_KEY)
    manifest = json.loads(manifest_bytes)
    assert manifest["run_id"] == RUN_ID
    assert manifest["input"] == MANIFEST["input"] and manifest["parameters"] == MANIFEST["parameters"]
    assert [entry["name"] for entry in manifest["files"]] == sorted(FILES)
    for entry in manifest["files"]:
        stored = target.read(entry["key"])
        assert entry["key"] == run_key(RUN_ID, entry["name"])
        assert entry["size"] == len(stored) == len(FILES[entry["name"]])
        assert entry["sha256"] == sha256_hex(stored)
    assert_no_credentials(manifest_bytes.decode())


def test_latest_points_to_the_published_run(target: PublishTarget) -> None:
    publish_run(target.store, RUN_ID, FILES, MANIFEST)

    latest = json.loads(target.read(LATEST_KEY))
    assert latest["run_id"] == RUN_ID
    assert latest["manifest"] == MANIFEST_KEY
    assert datetime.fromisoformat(latest["published_at"]).utcoffset() is not None


def test_republishing_uploads_nothing_and_returns_the_same_result(target: PublishTarget) -> None:
    first = publish_run(target.store, RUN_ID, FILES, MANIFEST)
    latest_before = target.read(LATEST_KEY)
    store = RecordingStore(target.store)

    second = publish_run(store, RUN_ID, FILES, MANIFEST)

    assert store.put_keys == []
    assert second == first
    assert target.read(LATEST_KEY) == latest_before


def test_a_new_run_leaves_the_earlier_run_untouched(target: PublishTarget) -> None:
    publish_run(target.store, RUN_ID, FILES, MANIFEST)
    first_run = {key: target.read(key) for key in RUN_KEYS | {MANIFEST_KEY}}
    store = RecordingStore(target.store)

    publish_run(store, OTHER_RUN_ID, {name: data + b"\nnext month" for name, data in FILES.items()}, MANIFEST)

    assert not [key for key in store.put_keys if key.startswith(f"runs/{RUN_ID}/")]
    assert {key: target.read(key) for key in first_run} == first_run
    assert json.loads(target.read(LATEST_KEY))["run_id"] == OTHER_RUN_ID


def test_an_interrupted_publish_leaves_no_manifest_and_a_rerun_completes_it(target: PublishTarget) -> None:
    with pytest.raises(ConnectionError):
        publish_run(InterruptedStore(target.store, allowed_puts=3), RUN_ID, FILES, MANIFEST)
    assert target.read(MANIFEST_KEY) is None
    assert target.read(LATEST_KEY) is None
    store = RecordingStore(target.store)

    publish_run(store, RUN_ID, FILES, MANIFEST)

    assert len(store.put_keys) == len(FILES) - 3 + 2  # the files not yet stored, the manifest, latest.json
    assert target.keys() == RUN_KEYS | {MANIFEST_KEY, LATEST_KEY}


def test_republishing_other_files_leaves_exactly_the_new_ones_and_no_manifest_until_they_are_stored(
    target: PublishTarget,
) -> None:
    publish_run(target.store, RUN_ID, FILES, MANIFEST)
    renamed = {**{name: data + b"\nagain" for name, data in FILES.items() if not name.startswith("exports/")},
               "exports/segment_top-value_loyal.csv": FILES["exports/segment_loyal.csv"]}

    with pytest.raises(ConnectionError):
        publish_run(InterruptedStore(target.store, allowed_puts=2), RUN_ID, renamed, MANIFEST)
    assert target.read(MANIFEST_KEY) is None  # not the first publish's, whose files are being replaced
    publish_run(target.store, RUN_ID, renamed, MANIFEST)

    assert target.keys() == {run_key(RUN_ID, name) for name in renamed} | {MANIFEST_KEY, LATEST_KEY}
    manifest = json.loads(target.read(MANIFEST_KEY))
    assert {entry["name"]: entry["sha256"] for entry in manifest["files"]} == {
        name: sha256_hex(data) for name, data in renamed.items()}


def test_latest_stays_on_a_newer_run_when_an_older_one_is_republished(target: PublishTarget) -> None:
    publish_run(target.store, RUN_ID, FILES, MANIFEST)
    publish_run(target.store, OTHER_RUN_ID, FILES, MANIFEST)
    latest_before = target.read(LATEST_KEY)

    publish_run(target.store, RUN_ID, {**FILES, "metrics.json": b'{"silhouette": 0.43}'}, MANIFEST)

    assert target.read(LATEST_KEY) == latest_before
    publish_run(target.store, "2026-11-28T08-00-00_ef56", FILES, MANIFEST)
    assert json.loads(target.read(LATEST_KEY))["run_id"] == "2026-11-28T08-00-00_ef56"


def test_an_upload_whose_stored_bytes_differ_is_rejected_before_the_manifest(target: PublishTarget) -> None:
    with pytest.raises(StoreError, match="sha256") as raised:
        publish_run(CorruptingStore(target.store), RUN_ID, FILES, MANIFEST)

    assert raised.value.retryable is True
    assert target.read(MANIFEST_KEY) is None


# --- local directory -------------------------------------------------------------------


def test_local_urls_are_file_uris_of_the_written_files(tmp_path: Path) -> None:
    published = publish_run(open_store(tmp_path), RUN_ID, FILES, MANIFEST)

    assert published.manifest_key == MANIFEST_KEY
    assert published.manifest_url == (tmp_path / MANIFEST_KEY).as_uri()
    assert published.files == {name: (tmp_path / run_key(RUN_ID, name)).as_uri() for name in FILES}


def test_a_local_target_that_cannot_be_written_is_a_permanent_error(tmp_path: Path) -> None:
    occupied = tmp_path / "not-a-directory"
    occupied.write_text("a file where the target directory should be")

    with pytest.raises(StoreError, match="not-a-directory") as raised:
        publish_run(open_store(occupied), RUN_ID, FILES, MANIFEST)

    assert raised.value.retryable is False


# --- S3 --------------------------------------------------------------------------------


@pytest.mark.slow
def test_s3_objects_carry_content_types_and_sha256_checksums(s3_endpoint: str) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)

    published = publish_run(open_store(f"s3://{bucket}/{S3_PREFIX}", s3_client=client), RUN_ID, FILES, MANIFEST)

    stored_keys = [run_key(RUN_ID, name) for name in FILES] + [MANIFEST_KEY, LATEST_KEY]
    for key in stored_keys:
        head = client.head_object(Bucket=bucket, Key=f"{S3_PREFIX}/{key}", ChecksumMode="ENABLED")
        body = client.get_object(Bucket=bucket, Key=f"{S3_PREFIX}/{key}")["Body"].read()
        assert head["ContentType"] == content_type_for(key)
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert published.manifest_url == f"s3://{bucket}/{S3_PREFIX}/{MANIFEST_KEY}"
    assert published.files["charts/k_distance.png"] == f"s3://{bucket}/{S3_PREFIX}/runs/{RUN_ID}/charts/k_distance.png"


@pytest.mark.slow
def test_s3_sha256_of_reads_back_objects_stored_without_a_sha256_checksum(s3_endpoint: str) -> None:
    client = s3_test_client(s3_endpoint)
    bucket = new_bucket(client)
    client.put_object(Bucket=bucket, Key="by-another-tool.csv", Body=b"a,b\n1,2\n")  # boto3 adds only a CRC32
    store = open_store(f"s3://{bucket}", s3_client=client)

    assert store.sha256_of("by-another-tool.csv") == sha256_hex(b"a,b\n1,2\n")
    assert store.sha256_of("absent.csv") is None


@pytest.mark.slow
def test_a_missing_bucket_is_a_permanent_error_naming_the_bucket(
    s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    for logger in ("tasks", "botocore"):
        caplog.set_level(logging.DEBUG, logger=logger)
    client = s3_test_client(s3_endpoint, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)

    with pytest.raises(StoreError, match="'no-such-bucket' does not exist") as raised:
        publish_run(open_store("s3://no-such-bucket/x", s3_client=client), RUN_ID, FILES, MANIFEST)

    assert raised.value.retryable is False
    assert isinstance(raised.value, RuntimeError)
    assert_error_free_of_credentials(raised.value)
    # The capture holds the failed request, so finding nothing in it means something. botocore's own
    # debug log shows the access key id (in the Authorization header), never the secret key.
    assert "NoSuchBucket" in caplog.text
    assert SECRET_ACCESS_KEY not in caplog.text


@pytest.mark.slow
def test_unknown_credentials_are_a_permanent_error_naming_the_bucket() -> None:
    with moto_s3_server(enforce_auth=True) as endpoint_url:
        client = s3_test_client(endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)

        with pytest.raises(StoreError, match="access to bucket 'artifacts' was denied") as raised:
            publish_run(open_store("s3://artifacts", s3_client=client), RUN_ID, FILES, MANIFEST)

    assert raised.value.retryable is False
    assert_error_free_of_credentials(raised.value)


# What a store does when its endpoint does not answer, and how its error must begin.
UNREACHABLE_ENDPOINT_ATTEMPTS = {
    "publishing": (lambda client: publish_run(open_store("s3://artifacts", s3_client=client), RUN_ID, FILES, MANIFEST),
                   r"^Publish to s3://artifacts/\S+: the S3 endpoint could not be reached"),
    "reading a model": (lambda client: open_store("s3://models/runs/fit", s3_client=client, reading=True).get(
        "model/model.json"), r"^Read from s3://models/runs/fit/model/model\.json: the S3 endpoint could not be reached"),
}


@pytest.mark.parametrize("attempt", UNREACHABLE_ENDPOINT_ATTEMPTS)
def test_an_unreachable_endpoint_is_a_retryable_error_saying_what_was_done(monkeypatch: pytest.MonkeyPatch,
                                                                          attempt: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    closed_port_client = make_s3_client(endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1")
    run, expected = UNREACHABLE_ENDPOINT_ATTEMPTS[attempt]

    with pytest.raises(StoreError, match=expected) as raised:
        run(closed_port_client)

    assert raised.value.retryable is True
    assert_error_free_of_credentials(raised.value)


@pytest.mark.parametrize("retryable", [True, False])
def test_a_store_error_crosses_processes_whole(retryable: bool) -> None:
    """The partitioned flow's file tasks reach S3 on Dask workers, which send their errors to the flow pickled."""
    crossed = pickle.loads(pickle.dumps(StoreError("Read from s3://models/run: refused.", retryable=retryable)))
    assert (type(crossed), str(crossed), crossed.retryable) == (StoreError, "Read from s3://models/run: refused.",
                                                              retryable)


@pytest.mark.parametrize("reading, doing", [(False, "Publish to"), (True, "Read from")])
def test_missing_credentials_are_a_permanent_error_naming_every_way_to_give_them(
    monkeypatch: pytest.MonkeyPatch, reading: bool, doing: str
) -> None:
    use_no_credentials(monkeypatch)
    client = make_s3_client(endpoint_url=f"http://127.0.0.1:{free_port()}")
    store = open_store("s3://models/runs/fit", s3_client=client, reading=reading)

    expected = rf"^{doing} s3://models/runs/fit/model/model\.json: no usable AWS credentials were found "
    with pytest.raises(StoreError, match=expected) as raised:
        store.get("model/model.json")

    assert raised.value.retryable is False
    assert_names_every_way_to_give_credentials(str(raised.value))


# --- a store opened for reading: its errors say what it was doing --------------------------


def test_a_local_file_that_cannot_be_read_is_reported_as_what_the_store_was_opened_for(tmp_path: Path) -> None:
    model_file = tmp_path / "model" / "model.json"
    model_file.mkdir(parents=True)  # a folder where the file should be

    for reading, doing in [(True, "Read from"), (False, "Publish to")]:
        expected = rf"^{doing} {re.escape(str(model_file))}: cannot read the file"
        with pytest.raises(StoreError, match=expected) as raised:
            open_store(tmp_path, reading=reading).get("model/model.json")
        assert raised.value.retryable is False


@pytest.mark.slow
def test_a_missing_bucket_read_from_is_reported_as_a_read_with_advice_for_reading(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket/runs/fit", s3_client=s3_test_client(s3_endpoint), reading=True)

    with pytest.raises(StoreError) as raised:
        store.get("model/model.json")

    assert str(raised.value) == (
        "Read from s3://no-such-bucket/runs/fit/model/model.json: bucket 'no-such-bucket' does not exist. "
        "Check the bucket name in the location and the S3 endpoint (NoSuchBucket, HTTP 404); retrying will not help."
    )
    assert raised.value.retryable is False


@pytest.mark.slow
def test_access_denied_to_a_bucket_read_from_asks_only_for_read_access() -> None:
    with moto_s3_server(enforce_auth=True) as endpoint_url:
        client = s3_test_client(endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)
        store = open_store("s3://models/runs/fit", s3_client=client, reading=True)

        with pytest.raises(StoreError) as raised:
            store.get("model/model.json")

    assert str(raised.value) == (
        "Read from s3://models/runs/fit/model/model.json: access to bucket 'models' was denied. Check that the "
        "credentials are valid and allowed to read this bucket and prefix (InvalidAccessKeyId, HTTP 403); "
        "retrying will not help."
    )
    assert raised.value.retryable is False
    assert_error_free_of_credentials(raised.value)


@pytest.fixture
def clean_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS settings from the developer's machine: no config files, profile, region or endpoint."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.slow
def test_open_store_builds_its_client_from_the_standard_aws_environment(
    clean_aws_environment: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    clean_aws_environment.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    clean_aws_environment.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    clean_aws_environment.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    clean_aws_environment.setenv("AWS_REGION", "us-east-1")
    bucket = new_bucket(s3_test_client(s3_endpoint))

    published = publish_run(open_store(f"s3://{bucket}"), RUN_ID, FILES, MANIFEST)

    assert published.manifest_url == f"s3://{bucket}/{MANIFEST_KEY}"
    client = make_s3_client()
    assert (client.meta.endpoint_url, client.meta.region_name) == (s3_endpoint, "us-east-1")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}


def test_make_s3_client_arguments_override_the_environment(clean_aws_environment: pytest.MonkeyPatch) -> None:
    clean_aws_environment.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    clean_aws_environment.setenv("AWS_REGION", "eu-west-1")

    client = make_s3_client(endpoint_url="http://127.0.0.1:2", region="eu-central-1", addressing_style="path")

    assert client.meta.endpoint_url == "http://127.0.0.1:2"
    assert client.meta.region_name == "eu-central-1"
    assert client.meta.config.s3 == {"addressing_style": "path"}


def test_make_s3_client_prefers_aws_region_over_aws_default_region(
    clean_aws_environment: pytest.MonkeyPatch,
) -> None:
    clean_aws_environment.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert make_s3_client().meta.region_name == "eu-west-1"

    clean_aws_environment.setenv("AWS_REGION", "ap-southeast-2")
    assert make_s3_client().meta.region_name == "ap-southeast-2"


# --- names and targets -----------------------------------------------------------------


@pytest.mark.parametrize("run_id", [RUN_ID, "a", "run.1", "v1_2-3", "x" * 128])
def test_validate_run_id_accepts_safe_ids(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id", ["", ".", "..", "../escape", "/abs", "a/b", "a\\b", "tab\there", "nul\x00", "new\nline", "sp ace",
               "ü", "x" * 129],
)
def test_validate_run_id_rejects_unsafe_ids_naming_them(run_id: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_run_id(run_id)
    assert repr(run_id) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://my-bucket", S3Target("my-bucket", "")),
        ("s3://my-bucket/", S3Target("my-bucket", "")),
        ("s3://my.bucket-01/team/segments/", S3Target("my.bucket-01", "team/segments")),
        ("artifacts/out", LocalTarget(Path("artifacts/out"))),
        ("/srv/artifacts", LocalTarget(Path("/srv/artifacts"))),
        (Path("artifacts"), LocalTarget(Path("artifacts"))),
    ],
)
def test_parse_target_reads_local_and_s3_targets(text: str | Path, expected: LocalTarget | S3Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "   ", "s3://", "s3:///abs", "s3://ab", "s3://Upper-Case", "s3://under_score", "s3://a..b",
        "s3://-leading", "s3://bucket/../other", "s3://bucket/a/../../b", "../outside", "artifacts/../../etc",
        "new\nline", "s3://bucket/pre\x00fix", "gs://bucket/x",
    ],
)
def test_parse_target_rejects_unsafe_or_malformed_targets(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_a_location_only_read_from_may_climb_out_of_the_working_folder_but_not_out_of_a_bucket() -> None:
    assert parse_target("../project/artifacts/runs/x", reading=True) == LocalTarget(Path("../project/artifacts/runs/x"))
    for text in ("s3://bucket/../other", "s3://Upper-Case/runs/x", "gs://bucket/runs/x", "runs/\nx", ""):
        with pytest.raises(ValueError, match="Location"):
            parse_target(text, reading=True)


@pytest.mark.parametrize(
    "name", ["", "../escape.csv", "/abs.csv", "a/b/c.csv", "charts/", "manifest.json", "bad\nname.csv", "a/../b.csv"]
)
def test_publish_run_rejects_unsafe_file_names_before_writing_anything(tmp_path: Path, name: str) -> None:
    store = RecordingStore(open_store(tmp_path))

    with pytest.raises(ValueError):
        publish_run(store, RUN_ID, {**FILES, name: b"x"}, MANIFEST)

    assert store.put_keys == []


def test_publish_run_rejects_an_unsafe_run_id_before_writing_anything(tmp_path: Path) -> None:
    store = RecordingStore(open_store(tmp_path))

    with pytest.raises(ValueError, match=r"'\.\./x'"):
        publish_run(store, "../x", FILES, MANIFEST)

    assert store.put_keys == []


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("segments.parquet", "application/vnd.apache.parquet"),
        ("exports/segment_loyal.CSV", "text/csv"),
        ("manifest.json", "application/json"),
        ("report.html", "text/html; charset=utf-8"),
        ("charts/k_distance.png", "image/png"),
        ("model.pkl", "application/octet-stream"),
        ("README", "application/octet-stream"),
    ],
)
def test_content_type_follows_the_extension(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type
