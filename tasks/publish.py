"""Publish: write a run's artifacts to a local directory or S3, then its manifest, then latest.json.

Layout, the same for both targets:

    <target>/runs/<run_id>/<file name>       every artifact, uploaded and verified first
    <target>/runs/<run_id>/manifest.json     name, key, size and sha256 of each artifact
    <target>/latest.json                     {"run_id", "manifest", "published_at"}

The manifest is written only after every file in it is stored and verified, so a reader
that finds a manifest can trust it; an interrupted publish leaves no manifest behind. Publishing
a run id again (resuming a run) first removes the run's manifest, unless it stays the same, and
removes the files of the earlier publish that the new one lacks before writing the new manifest,
so even then the run folder holds the files of one manifest or none. latest.json keeps naming a
run that became the latest after another run's first publish when that other run is republished.
On S3 every object goes up with a SHA-256 checksum (in parts from the multipart threshold on)
and is verified after the upload: by S3's stored checksum, or for multipart objects by reading
it back, as S3 keeps only a checksum of the parts' checksums for those.
"""

import base64
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore import exceptions as boto_errors
from botocore.config import Config

from tasks.errors import SegmentsError

log = logging.getLogger(__name__)

S3Client = Any  # botocore builds the client class at runtime, so there is nothing better to name here

MANIFEST_NAME = "manifest.json"
LATEST_KEY = "latest.json"
S3_MAX_ATTEMPTS = 3  # the first try included
MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3 refuses smaller parts, except the last one
DEFAULT_MULTIPART_THRESHOLD_BYTES = 8 * MIB  # boto3's default; objects this big go up in parts of this size
DEFAULT_LINK_EXPIRY_SECONDS = 24 * 60 * 60
MAX_LINK_EXPIRY_SECONDS = 7 * 24 * 60 * 60  # the longest a SigV4 presigned URL can be valid

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
_MISSING_BUCKET_CODES = {"NoSuchBucket", "404"}  # HEAD responses carry no error body, so only the status is left
# What a failed S3 call means, for publishing here and for reading input in tasks/sources.py alike.
# Error codes of a 4xx status after which the same request may still succeed: throttled or timed out,
# or a body damaged on its way (only uploads send one).
RETRYABLE_S3_CODES = frozenset({
    "RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "BadDigest", "XAmzContentSHA256Mismatch",
})
MISSING_AWS_CREDENTIALS = (
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.CredentialRetrievalError,
)
S3_TRANSPORT_FAILURES = (boto_errors.ConnectionError, boto_errors.HTTPClientError, boto_errors.IncompleteReadError)


class StoreError(SegmentsError, RuntimeError):
    """A store (a local folder or an S3 prefix) could not be written or read.

    `retryable` tells whether the same call may succeed later.
    """

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self) -> tuple:
        # Pickled by its parts, so that it can cross from a Dask worker (the partitioned flow's file tasks reach
        # S3) to the flow: pickle's default would call it with the message alone.
        return partial(type(self), retryable=self.retryable), (str(self),)


# --- targets and names -----------------------------------------------------------------


@dataclass(frozen=True)
class LocalTarget:
    root: Path


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str  # "" or "a/b", never with a leading or trailing slash


Target = LocalTarget | S3Target


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store; the defaults leave everything to the standard AWS settings."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or AWS itself
    region: str | None = None  # None: AWS_REGION, AWS_DEFAULT_REGION or the profile's region
    addressing_style: Literal["auto", "virtual", "path"] | None = None  # MinIO and most other stores want "path"
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    create_bucket: bool = False  # create a missing bucket instead of failing
    access_key_id_block: str | None = None  # names of Prefect Secret blocks; None: the AWS credential chain
    secret_access_key_block: str | None = None
    multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES

    def __post_init__(self) -> None:
        if (self.access_key_id_block is None) != (self.secret_access_key_block is None):
            raise ValueError("Name both Prefect Secret blocks (access key id and secret access key), or neither.")
        if self.multipart_threshold_bytes < MIN_PART_BYTES:
            raise ValueError(f"The multipart threshold must be at least {MIN_PART_BYTES:,} bytes, S3's smallest part.")


@dataclass(frozen=True)
class AwsKeys:
    """An access key pair; the secret stays out of repr() and so out of logs and tracebacks."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class DownloadLink:
    """A URL that opens a stored object, and when it stops working (None: never)."""

    url: str
    expires_at: datetime | None


def parse_target(target: str | os.PathLike[str], *, reading: bool = False) -> Target:
    """Read `s3://bucket/optional/prefix` as an S3Target and anything else as a local directory.

    A target published to must not climb out of its folder through '..'; a local folder that is only
    read from (`reading`, a published run's folder say) may, as in `../project/artifacts/runs/<run_id>`.
    """
    text = os.fspath(target)
    what = "Location" if reading else "Publish target"
    _reject_control_characters(text, what)
    if not text.strip():
        raise ValueError(f"{what} is empty; give a directory or s3://bucket/prefix.")
    scheme, separator, rest = text.partition("://")
    if not separator:
        if not reading:
            _reject_parent_segments(Path(text).parts, text, what)
        return LocalTarget(Path(text))
    if scheme != "s3":
        raise ValueError(f"{what} {text!r}: unsupported scheme {scheme!r}; use a directory or s3://.")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{what} {text!r}: {bucket!r} is not a valid bucket name "
            "(3-63 characters: lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)."
        )
    segments = [segment for segment in prefix.split("/") if segment]
    _reject_parent_segments(segments, text, what)  # S3 keys have no parent: '..' would be taken literally
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


def _reject_control_characters(text: str, what: str) -> None:
    """Raise ValueError if a target contains a control character such as a newline or NUL."""
    if any(unicodedata.category(character) == "Cc" for character in text):
        raise ValueError(f"{what} {text!r} contains control characters.")


def _reject_parent_segments(segments: list[str] | tuple[str, ...], text: str, what: str) -> None:
    """Raise ValueError if a path has a '..' segment, which could escape the target."""
    if ".." in segments:
        raise ValueError(f"{what} {text!r} must not contain '..' segments.")


def content_type_for(name: str) -> str:
    """The MIME type stored with an artifact, chosen by its extension."""
    return CONTENT_TYPES.get(PurePosixPath(name).suffix.lower(), DEFAULT_CONTENT_TYPE)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def without_query(url: str) -> str:
    """The URL without its query string, where a presigned URL carries its signature: safe to log."""
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


# --- stores ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StorePurpose:
    """What a store was opened for, as its errors tell it: a model read from a bucket is not being published."""

    doing: str  # begins every message, before the location
    missing_bucket_advice: str
    access_needed: str  # what the credentials must be allowed to do in the bucket


PUBLISHING = StorePurpose("Publish to", "Create it, fix the target or allow creating the bucket", "read and write")
# With MinIO, a run without --s3-endpoint-url looks for the bucket on AWS.
READING = StorePurpose("Read from", "Check the bucket name in the location and the S3 endpoint", "read")


class ArtifactStore(Protocol):
    """Where published objects live; keys are '/'-separated and relative to the target root."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def sha256_of(self, key: str) -> str | None: ...

    def keys_under(self, folder: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...

    def download_url(self, key: str, expires_in_seconds: int) -> DownloadLink: ...


class LocalStore:
    """A directory; every put is atomic, so readers see the old file or the new one, never a partial one."""

    def __init__(self, root: str | os.PathLike[str], *, purpose: StorePurpose) -> None:
        self.root = Path(root).absolute()
        self.purpose = purpose

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write the file atomically; the content type has no place on a file system."""
        path = self._path(key)
        try:
            _write_atomically(path, data)
        except OSError as error:
            raise StoreError(f"{self.purpose.doing} {path}: cannot write the file ({error}).",
                             retryable=False) from error

    def get(self, key: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise StoreError(f"{self.purpose.doing} {path}: cannot read the file ({error}).",
                             retryable=False) from error

    def sha256_of(self, key: str) -> str | None:
        """Hex SHA-256 of the file, or None if there is no such file."""
        data = self.get(key)
        return None if data is None else sha256_hex(data)

    def keys_under(self, folder: str) -> list[str]:
        """The key of every file in `folder` and its sub-folders."""
        return sorted(path.relative_to(self.root).as_posix() for path in self._path(folder).rglob("*") if path.is_file())

    def delete(self, key: str) -> None:
        """Remove the file, if there is one."""
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise StoreError(f"{self.purpose.doing} {path}: cannot remove the file ({error}).",
                             retryable=False) from error

    def url(self, key: str) -> str:
        """A file:// URI for the key."""
        return self._path(key).as_uri()

    def download_url(self, key: str, expires_in_seconds: int) -> DownloadLink:
        """The file:// URI, which does not expire."""
        return DownloadLink(self.url(key), expires_at=None)

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

    def __init__(
        self, client: S3Client, bucket: str, prefix: str = "", *, purpose: StorePurpose,
        server_side_encryption: str | None = None,
        multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.purpose = purpose
        self.server_side_encryption = server_side_encryption
        # Parts go up one after another: artifacts are a few MB, and failures then surface in the caller's thread.
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold_bytes, multipart_chunksize=multipart_threshold_bytes,
            use_threads=False,
        )

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload `data`, in parts from the multipart threshold on; S3 rejects any part that fails its SHA-256."""
        extra_args = {"ContentType": content_type, "ChecksumAlgorithm": "SHA256"}
        if self.server_side_encryption:
            extra_args["ServerSideEncryption"] = self.server_side_encryption
        with self._errors_explained(key):
            try:
                self.client.upload_fileobj(
                    io.BytesIO(data), self.bucket, self._object_key(key), ExtraArgs=extra_args,
                    Config=self.transfer_config,
                )
            except boto_errors.ClientError as error:
                # A retried CompleteMultipartUpload whose first try did complete finds no upload any more.
                # Whether the object is there is for the caller's check of the stored bytes to tell.
                if s3_error_code(error) != "NoSuchUpload":
                    raise
                log.warning("Multipart upload of %s already completed or aborted; checking the object.", self.url(key))

    def create_bucket_if_missing(self) -> None:
        """Create the bucket, in the client's region, unless it exists."""
        with self._errors_explained(""):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except boto_errors.ClientError as error:
                if s3_error_code(error) not in _MISSING_BUCKET_CODES:
                    raise
            region = self.client.meta.region_name
            location = {} if region in (None, "us-east-1") else {
                "CreateBucketConfiguration": {"LocationConstraint": region}}
            try:
                self.client.create_bucket(Bucket=self.bucket, **location)
                log.info("Created bucket %s.", self.bucket)
            except boto_errors.ClientError as error:
                if s3_error_code(error) != "BucketAlreadyOwnedByYou":  # created meanwhile by a parallel run
                    raise

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""
        with self._errors_explained(key):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"].read()
            except boto_errors.ClientError as error:
                if is_missing_s3_object(error):
                    return None
                raise

    def sha256_of(self, key: str) -> str | None:
        """Hex SHA-256 of the whole object: its stored checksum if any, else by reading it back; None if absent."""
        with self._errors_explained(key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key), ChecksumMode="ENABLED")
            except boto_errors.ClientError as error:
                if is_missing_s3_object(error):
                    return None
                raise
        stored = _whole_object_sha256(head)
        if stored is not None:
            return stored
        data = self.get(key)
        return None if data is None else sha256_hex(data)

    def keys_under(self, folder: str) -> list[str]:
        """The key of every object whose key starts with `folder` and a slash."""
        with self._errors_explained(folder):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self._object_key(folder)}/")
            object_keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return sorted(key.removeprefix(f"{self.prefix}/") if self.prefix else key for key in object_keys)

    def delete(self, key: str) -> None:
        """Remove the object; S3 answers a missing one with success too."""
        with self._errors_explained(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def url(self, key: str) -> str:
        """The s3:// URI of the key."""
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def download_url(self, key: str, expires_in_seconds: int) -> DownloadLink:
        """A presigned GET URL of the object; its query string holds a signature, so never log it whole."""
        if not 1 <= expires_in_seconds <= MAX_LINK_EXPIRY_SECONDS:
            raise ValueError(f"A presigned link expires after 1 to {MAX_LINK_EXPIRY_SECONDS:,} seconds, "
                             f"not {expires_in_seconds:,}.")
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=expires_in_seconds)
        with self._errors_explained(key):
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._object_key(key)},
                ExpiresIn=expires_in_seconds,
            )
        return DownloadLink(url, expires_at)

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors_explained(self, key: str) -> Iterator[None]:
        """Turn botocore failures into a StoreError that names the bucket and key but no credentials."""
        try:
            yield
        except boto_errors.ClientError as error:
            raise _explain_client_error(error, self.bucket, self.url(key), self.purpose) from error
        except MISSING_AWS_CREDENTIALS as error:
            raise StoreError(
                f"{no_credentials_found(f'{self.purpose.doing} {self.url(key)}', error)}; retrying will not help.",
                retryable=False,
            ) from error
        except S3_TRANSPORT_FAILURES as error:
            raise StoreError(
                f"{self.purpose.doing} {self.url(key)}: the S3 endpoint could not be reached or did not answer "
                f"({type(error).__name__}: {error}). This is usually temporary; retrying may help.",
                retryable=True,
            ) from error


def _whole_object_sha256(head: dict) -> str | None:
    """Hex SHA-256 of the whole object from a HEAD response, or None if S3 did not store one."""
    stored = head.get("ChecksumSHA256")
    # A multipart object's checksum is a checksum of its parts' checksums, not of its bytes. S3 marks it with
    # a "-<parts>" suffix; moto does not, but like S3 it ends a multipart object's ETag with "-<parts>".
    multipart = "-" in head.get("ETag", "") or "-" in (stored or "") or head.get("ChecksumType") == "COMPOSITE"
    return None if not stored or multipart else base64.b64decode(stored).hex()


def is_missing_s3_object(error: boto_errors.ClientError) -> bool:
    """True for 'no such key'; HEAD requests carry no error body, so their code is just '404'."""
    return s3_error_code(error) in {"NoSuchKey", "404"}


def s3_error_code(error: boto_errors.ClientError) -> str:
    """S3's error code, e.g. "NoSuchKey"; "" when the response had no body (HEAD requests)."""
    return error.response.get("Error", {}).get("Code", "")


def s3_http_status(error: boto_errors.ClientError) -> int:
    """The response's HTTP status; 0 if botocore recorded none."""
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def is_transient_s3_error(error: boto_errors.ClientError) -> bool:
    """True when the same request may succeed later: a 5xx, throttling (429) or one of RETRYABLE_S3_CODES."""
    status = s3_http_status(error)
    return status >= 500 or status == 429 or s3_error_code(error) in RETRYABLE_S3_CODES


def no_credentials_found(location: str, error: Exception) -> str:
    """Why `location` ("Input s3://…", "Publish to s3://…") could not be reached without credentials, and the
    ways a user gives them: the standard AWS settings, or the runs' parameters naming Prefect Secret blocks."""
    return (
        f"{location}: no usable AWS credentials were found ({type(error).__name__}); set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or name the Prefect Secret blocks that hold the keys with "
        "--s3-access-key-id-block and --s3-secret-access-key-block (a deployment's s3_access_key_id_block and "
        "s3_secret_access_key_block)"
    )


def _explain_client_error(
    error: boto_errors.ClientError, bucket: str, url: str, purpose: StorePurpose,
) -> StoreError:
    """A one-paragraph StoreError for an S3 error response, marked retryable only for transient failures."""
    code, status = s3_error_code(error), s3_http_status(error)
    if code == "NoSuchBucket":
        problem = f"bucket {bucket!r} does not exist. {purpose.missing_bucket_advice}"
    elif status == 403:
        problem = (
            f"access to bucket {bucket!r} was denied. Check that the credentials are valid "
            f"and allowed to {purpose.access_needed} this bucket and prefix"
        )
    else:
        problem = error.response.get("Error", {}).get("Message", "") or "the request failed"
    retryable = is_transient_s3_error(error)
    advice = "retrying may help" if retryable else "retrying will not help"
    message = f"{purpose.doing} {url}: {problem} ({code or 'error'}, HTTP {status}); {advice}."
    return StoreError(message, retryable=retryable)


def make_s3_client(
    endpoint_url: str | None = None, region: str | None = None, addressing_style: str | None = None,
    keys: AwsKeys | None = None,
) -> S3Client:
    """A boto3 S3 client from the standard AWS settings; explicit arguments override them."""
    # boto3 already reads AWS_ENDPOINT_URL(_S3), AWS_DEFAULT_REGION and the credential chain, but not AWS_REGION.
    region = region or os.environ.get("AWS_REGION") or None
    config = Config(
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        s3={"addressing_style": addressing_style} if addressing_style else None,
        signature_version="s3v4",  # also for presigned URLs, which would otherwise use the deprecated SigV2 here
    )
    # Without keys, boto3 follows the credential chain: environment, shared files and profile, instance role.
    credentials = (
        {"aws_access_key_id": keys.access_key_id, "aws_secret_access_key": keys.secret_access_key} if keys else {}
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config, **credentials)


def keys_from_secret_blocks(settings: S3Settings) -> AwsKeys | None:
    """The access key pair from the Prefect Secret blocks named in `settings`; None if none are named."""
    if settings.access_key_id_block is None or settings.secret_access_key_block is None:
        return None
    return AwsKeys(
        _secret_block_text(settings.access_key_id_block), _secret_block_text(settings.secret_access_key_block)
    )


def _secret_block_text(name: str) -> str:
    """The string stored in the Prefect Secret block `name`."""
    # Imported here, not at the top: the CLI imports this module and must configure Prefect before Prefect loads.
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as error:  # what Prefect raises for an unknown block name
        raise StoreError(f"Prefect Secret block {name!r} was not found; create it or fix its name.",
                         retryable=False) from error
    if not isinstance(value, str) or not value:
        raise StoreError(f"Prefect Secret block {name!r} must hold a non-empty string.", retryable=False)
    return value


def s3_client_for(settings: S3Settings) -> S3Client:
    """A client for the store `settings` describe, with the keys of their Secret blocks if they name any."""
    return make_s3_client(
        settings.endpoint_url, settings.region, settings.addressing_style, keys_from_secret_blocks(settings),
    )


def open_store(
    target: str | os.PathLike[str], s3_client: S3Client | None = None, settings: S3Settings = S3Settings(), *,
    reading: bool = False,
) -> ArtifactStore:
    """The store for a target; S3 uses `s3_client` or one built from `settings`, and creates the bucket if asked.

    A store opened for `reading` is a location parse_target reads as such, its bucket is never created, and its
    errors say it was being read from.
    """
    parsed = parse_target(target, reading=reading)
    purpose = READING if reading else PUBLISHING
    if isinstance(parsed, LocalTarget):
        return LocalStore(parsed.root, purpose=purpose)
    store = S3Store(
        s3_client or s3_client_for(settings), parsed.bucket, parsed.prefix, purpose=purpose,
        server_side_encryption=settings.server_side_encryption,
        multipart_threshold_bytes=settings.multipart_threshold_bytes,
    )
    if settings.create_bucket and not reading:
        store.create_bucket_if_missing()
    return store


# --- publishing ------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedRun:
    run_id: str
    manifest_key: str
    manifest_url: str
    files: dict[str, str]  # relative name -> url


def run_folder(run_id: str) -> str:
    """The store folder of a run, relative to the target root."""
    return f"runs/{run_id}"


def run_key(run_id: str, name: str) -> str:
    """The store key of a run's file, relative to the target root."""
    return f"{run_folder(run_id)}/{name}"


def publish_run(store: ArtifactStore, run_id: str, files: dict[str, bytes], manifest: dict) -> PublishedRun:
    """Store every file, then the run's manifest, then latest.json; unchanged objects are not uploaded again.

    Publishing a run id again replaces the earlier publish: its manifest goes first (unless it stays the same),
    its files that are not among `files` go before the new manifest is written.
    """
    validate_run_id(run_id)
    names = sorted(validate_file_name(name) for name in files)
    manifest_key = run_key(run_id, MANIFEST_NAME)
    entries = [
        {"name": name, "key": run_key(run_id, name), "size": len(files[name]), "sha256": sha256_hex(files[name])}
        for name in names
    ]
    earlier_manifest = store.get(manifest_key)
    # Kept across republishing: it places the run among the others for latest.json.
    first_published_at = _first_published_at(earlier_manifest) or datetime.now(timezone.utc)
    # Serialised before any upload, so a manifest that cannot be written fails without touching the store.
    manifest_bytes = _json_bytes({
        **manifest, "run_id": run_id, "first_published_at": first_published_at.isoformat(), "files": entries,
    })

    if earlier_manifest not in (None, manifest_bytes):
        # Removed before any file it lists is replaced: a publish that dies from here on leaves the run without
        # a manifest, never with one whose checksums no longer match.
        store.delete(manifest_key)
    uploaded = sum(_put_verified(store, run_key(run_id, name), files[name]) for name in names)
    published_keys = {run_key(run_id, name) for name in names} | {manifest_key}
    leftovers = [key for key in store.keys_under(run_folder(run_id)) if key not in published_keys]
    for key in leftovers:
        store.delete(key)
    uploaded += _put_verified(store, manifest_key, manifest_bytes)
    if _latest_moves_to(store, run_id, manifest_key, first_published_at):
        latest = {"run_id": run_id, "manifest": manifest_key, "published_at": datetime.now(timezone.utc).isoformat()}
        uploaded += _put_verified(store, LATEST_KEY, _json_bytes(latest))
    log.info("Published run %s to %s (%d object(s) uploaded, %d left from an earlier publish removed).",
             run_id, store.url(manifest_key), uploaded, len(leftovers))
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
    if stored is None:
        raise StoreError(f"Publish to {store.url(key)}: the object is missing after its upload. Retrying may help.",
                         retryable=True)
    if stored != expected:
        raise StoreError(
            f"Publish to {store.url(key)}: the stored object's sha256 is {stored} but the uploaded bytes have "
            f"{expected}; it was corrupted in transit or overwritten concurrently. Retrying may help.",
            retryable=True,
        )
    return True


def _latest_moves_to(store: ArtifactStore, run_id: str, manifest_key: str, first_published_at: datetime) -> bool:
    """True unless latest.json names this run already, or another run that became latest after this run's first
    publish: republishing an older run must not make it the latest again."""
    latest = _json_document(store.get(LATEST_KEY))
    if latest.get("run_id") == run_id:
        return latest.get("manifest") != manifest_key
    named_at = _timestamp(latest.get("published_at"))
    return named_at is None or first_published_at >= named_at


def _first_published_at(manifest: bytes | None) -> datetime | None:
    """When the run of a stored manifest was first published; manifests from before that was recorded have
    only the time their body was made."""
    document = _json_document(manifest)
    return _timestamp(document.get("first_published_at")) or _timestamp(document.get("created_at"))


def _json_document(data: bytes | None) -> dict:
    """The JSON object stored as `data`; {} if there is none or it is not a JSON object."""
    try:
        document = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _timestamp(text: object) -> datetime | None:
    """An ISO 8601 time with its UTC offset; None for anything else."""
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _json_bytes(document: dict) -> bytes:
    """Stable, readable UTF-8 JSON (dates and paths as text), so equal documents give equal bytes and checksums."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")
