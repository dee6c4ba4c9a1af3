"""Publish: write a run's artifacts to a local directory or S3, then its manifest, then latest.json.

Layout, the same for both targets:

    <target>/runs/<run_id>/<file name>       every artifact, uploaded and verified first
    <target>/runs/<run_id>/manifest.json     name, key, size and sha256 of each artifact
    <target>/latest.json                     {"run_id", "manifest", "published_at"}

The manifest is written only after every file in it is stored and verified, so a reader
that finds a manifest can trust it; an interrupted publish leaves no manifest behind.
"""

import base64
import hashlib
import json
import logging
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import boto3
from botocore import exceptions as boto_errors
from botocore.config import Config

from tasks.errors import SegmentsError

log = logging.getLogger(__name__)

S3Client = Any  # botocore builds the client class at runtime, so there is nothing better to name here

MANIFEST_NAME = "manifest.json"
LATEST_KEY = "latest.json"
S3_MAX_ATTEMPTS = 3  # the first try included

CONTENT_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".csv": "text/csv",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# S3 error codes that mean "try again later" although their HTTP status is a 4xx.
_RETRYABLE_S3_CODES = {"RequestTimeout", "SlowDown", "Throttling", "BadDigest", "XAmzContentSHA256Mismatch"}
_MISSING_CREDENTIALS = (
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.CredentialRetrievalError,
)
_TRANSPORT_FAILURES = (boto_errors.ConnectionError, boto_errors.HTTPClientError, boto_errors.IncompleteReadError)


class PublishError(SegmentsError, RuntimeError):
    """Publishing failed; `retryable` tells whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


# --- targets and names -----------------------------------------------------------------


@dataclass(frozen=True)
class LocalTarget:
    root: Path


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str  # "" or "a/b", never with a leading or trailing slash


Target = LocalTarget | S3Target


def parse_target(target: str | os.PathLike[str]) -> Target:
    """Read `s3://bucket/optional/prefix` as an S3Target and anything else as a local directory."""
    text = os.fspath(target)
    _reject_control_characters(text)
    if not text.strip():
        raise ValueError("Publish target is empty; give a directory or s3://bucket/prefix.")
    scheme, separator, rest = text.partition("://")
    if not separator:
        _reject_parent_segments(Path(text).parts, text)
        return LocalTarget(Path(text))
    if scheme != "s3":
        raise ValueError(f"Publish target {text!r}: unsupported scheme {scheme!r}; use a directory or s3://.")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"Publish target {text!r}: {bucket!r} is not a valid bucket name "
            "(3-63 characters: lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)."
        )
    segments = [segment for segment in prefix.split("/") if segment]
    _reject_parent_segments(segments, text)
    return S3Target(bucket, "/".join(segments))


def validate_run_id(run_id: str) -> str:
    """Return `run_id` if it is safe as one path segment: [A-Za-z0-9._-], 1-128 characters, not '.' or '..'."""
    return _validate_segment(run_id, "run id")


def validate_file_name(name: str) -> str:
    """Return `name` if it is a safe relative artifact name with at most one sub-folder, e.g. 'charts/k.png'."""
    parts = name.split("/")
    if len(parts) > 2:
        raise ValueError(f"Artifact name {name!r}: at most one sub-folder is allowed.")
    for part in parts:
        _validate_segment(part, f"artifact name {name!r}, segment")
    if name == MANIFEST_NAME:
        raise ValueError(f"Artifact name {name!r} is reserved for the run's manifest.")
    return name


def _validate_segment(value: str, what: str) -> str:
    """Return `value` if it matches the safe-name rule, else raise ValueError naming it."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or value in {".", ".."}:
        raise ValueError(f"Invalid {what} {value!r}: use 1-128 of A-Z a-z 0-9 . _ - (and not '.' or '..').")
    return value


def _reject_control_characters(text: str) -> None:
    """Raise ValueError if a target contains a control character such as a newline or NUL."""
    if any(unicodedata.category(character) == "Cc" for character in text):
        raise ValueError(f"Publish target {text!r} contains control characters.")


def _reject_parent_segments(segments: list[str] | tuple[str, ...], text: str) -> None:
    """Raise ValueError if a path has a '..' segment, which could escape the target."""
    if ".." in segments:
        raise ValueError(f"Publish target {text!r} must not contain '..' segments.")


def content_type_for(name: str) -> str:
    """The MIME type stored with an artifact, chosen by its extension."""
    return CONTENT_TYPES.get(PurePosixPath(name).suffix.lower(), DEFAULT_CONTENT_TYPE)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


# --- stores ----------------------------------------------------------------------------


class ArtifactStore(Protocol):
    """Where published objects live; keys are '/'-separated and relative to the target root."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def sha256_of(self, key: str) -> str | None: ...

    def url(self, key: str) -> str: ...


class LocalStore:
    """A directory; every put is atomic, so readers see the old file or the new one, never a partial one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write the file atomically; the content type has no place on a file system."""
        path = self._path(key)
        try:
            _write_atomically(path, data)
        except OSError as error:
            raise PublishError(f"Publish to {path}: cannot write the file ({error}).", retryable=False) from error

    def get(self, key: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise PublishError(f"Publish to {path}: cannot read the file ({error}).", retryable=False) from error

    def sha256_of(self, key: str) -> str | None:
        """Hex SHA-256 of the file, or None if there is no such file."""
        data = self.get(key)
        return None if data is None else sha256_hex(data)

    def url(self, key: str) -> str:
        """A file:// URI for the key."""
        return self._path(key).as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a uniquely named temp file next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are private (0600) while artifacts should get the usual umask permissions.
    temp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp_path, "xb") as temp_file:
            temp_file.write(data)
            # Flushed to disk before the rename, or a crash could leave the final name with missing content.
            os.fsync(temp_file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


class S3Store:
    """A bucket (and optional key prefix) reached through a boto3 S3 client."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload `data` in one request; S3 rejects the upload if the bytes do not match their SHA-256."""
        with self._errors_explained(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._object_key(key),
                Body=data,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
            )

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""
        with self._errors_explained(key):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"].read()
            except boto_errors.ClientError as error:
                if _is_missing_object(error):
                    return None
                raise

    def sha256_of(self, key: str) -> str | None:
        """Hex SHA-256 from the object's stored checksum, else by reading it back; None if absent."""
        with self._errors_explained(key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key), ChecksumMode="ENABLED")
            except boto_errors.ClientError as error:
                if _is_missing_object(error):
                    return None
                raise
        stored = head.get("ChecksumSHA256")
        # A multipart object's checksum is a checksum of part checksums ("...-N"), not of the bytes.
        if stored and "-" not in stored and head.get("ChecksumType") != "COMPOSITE":
            return base64.b64decode(stored).hex()
        data = self.get(key)
        return None if data is None else sha256_hex(data)

    def url(self, key: str) -> str:
        """The s3:// URI of the key."""
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors_explained(self, key: str) -> Iterator[None]:
        """Turn botocore failures into a PublishError that names the bucket and key but no credentials."""
        try:
            yield
        except boto_errors.ClientError as error:
            raise _explain_client_error(error, self.bucket, self.url(key)) from error
        except _MISSING_CREDENTIALS as error:
            raise PublishError(
                f"Publish to {self.url(key)}: no usable AWS credentials were found ({type(error).__name__}). "
                "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; retrying will not help.",
                retryable=False,
            ) from error
        except _TRANSPORT_FAILURES as error:
            raise PublishError(
                f"Publish to {self.url(key)}: the S3 endpoint could not be reached or did not answer "
                f"({type(error).__name__}: {error}). This is usually temporary; retrying may help.",
                retryable=True,
            ) from error


def _is_missing_object(error: boto_errors.ClientError) -> bool:
    """True for 'no such key'; HEAD requests carry no error body, so their code is just '404'."""
    return _error_code(error) in {"NoSuchKey", "404"}


def _error_code(error: boto_errors.ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _explain_client_error(error: boto_errors.ClientError, bucket: str, url: str) -> PublishError:
    """A one-paragraph PublishError for an S3 error response, marked retryable only for transient failures."""
    code = _error_code(error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "NoSuchBucket":
        problem = f"bucket {bucket!r} does not exist. Create it or fix the target"
    elif status == 403:
        problem = (
            f"access to bucket {bucket!r} was denied. Check that the credentials are valid "
            "and allowed to read and write this bucket and prefix"
        )
    else:
        problem = error.response.get("Error", {}).get("Message", "") or "the request failed"
    retryable = status >= 500 or status == 429 or code in _RETRYABLE_S3_CODES
    advice = "retrying may help" if retryable else "retrying will not help"
    message = f"Publish to {url}: {problem} ({code or 'error'}, HTTP {status}); {advice}."
    return PublishError(message, retryable=retryable)


def make_s3_client(
    endpoint_url: str | None = None, region: str | None = None, addressing_style: str | None = None
) -> S3Client:
    """A boto3 S3 client from the standard AWS settings; explicit arguments override them."""
    # boto3 already reads AWS_ENDPOINT_URL(_S3), AWS_DEFAULT_REGION and the credential chain, but not AWS_REGION.
    region = region or os.environ.get("AWS_REGION") or None
    config = Config(
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        s3={"addressing_style": addressing_style} if addressing_style else None,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def open_store(target: str | os.PathLike[str], s3_client: S3Client | None = None) -> ArtifactStore:
    """The store for a target; S3 uses `s3_client` or one built by make_s3_client()."""
    parsed = parse_target(target)
    if isinstance(parsed, LocalTarget):
        return LocalStore(parsed.root)
    return S3Store(s3_client or make_s3_client(), parsed.bucket, parsed.prefix)


# --- publishing ------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedRun:
    run_id: str
    manifest_key: str
    manifest_url: str
    files: dict[str, str]  # relative name -> url


def run_key(run_id: str, name: str) -> str:
    """The store key of a run's file, relative to the target root."""
    return f"runs/{run_id}/{name}"


def publish_run(store: ArtifactStore, run_id: str, files: dict[str, bytes], manifest: dict) -> PublishedRun:
    """Store every file, then the run's manifest, then latest.json; unchanged objects are not uploaded again."""
    validate_run_id(run_id)
    names = sorted(validate_file_name(name) for name in files)
    manifest_key = run_key(run_id, MANIFEST_NAME)
    entries = [
        {"name": name, "key": run_key(run_id, name), "size": len(files[name]), "sha256": sha256_hex(files[name])}
        for name in names
    ]
    # Serialised before any upload, so a manifest that cannot be written fails without touching the store.
    manifest_bytes = _json_bytes({**manifest, "run_id": run_id, "files": entries})

    uploaded = sum(_put_verified(store, run_key(run_id, name), files[name]) for name in names)
    uploaded += _put_verified(store, manifest_key, manifest_bytes)
    if not _latest_points_to(store, run_id, manifest_key):
        latest = {"run_id": run_id, "manifest": manifest_key, "published_at": datetime.now(timezone.utc).isoformat()}
        uploaded += _put_verified(store, LATEST_KEY, _json_bytes(latest))
    log.info("Published run %s to %s (%d object(s) uploaded).", run_id, store.url(manifest_key), uploaded)
    return PublishedRun(
        run_id=run_id,
        manifest_key=manifest_key,
        manifest_url=store.url(manifest_key),
        files={name: store.url(run_key(run_id, name)) for name in names},
    )


def _put_verified(store: ArtifactStore, key: str, data: bytes) -> bool:
    """Put `data` unless an identical object is already there, then check what was stored; True if uploaded."""
    expected = sha256_hex(data)
    if store.sha256_of(key) == expected:
        log.debug("Unchanged, not uploaded: %s", store.url(key))
        return False
    store.put(key, data, content_type_for(key))
    stored = store.sha256_of(key)
    if stored != expected:
        raise PublishError(
            f"Publish to {store.url(key)}: the stored object's sha256 is {stored} but the uploaded bytes have "
            f"{expected}; it was corrupted in transit or overwritten concurrently. Retrying may help.",
            retryable=True,
        )
    return True


def _latest_points_to(store: ArtifactStore, run_id: str, manifest_key: str) -> bool:
    """True if latest.json already names this run, so re-publishing it changes nothing."""
    current = store.get(LATEST_KEY)
    try:
        latest = json.loads(current) if current is not None else {}
    except ValueError:
        return False
    return isinstance(latest, dict) and latest.get("run_id") == run_id and latest.get("manifest") == manifest_key


def _json_bytes(document: dict) -> bytes:
    """Stable, readable UTF-8 JSON (dates and paths as text), so equal documents give equal bytes and checksums."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")
