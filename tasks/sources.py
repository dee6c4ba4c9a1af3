"""Input locations: a local file, folder or glob, an S3 object or prefix, or an HTTP(S) URL.

Remote inputs are streamed to a temporary folder and then read like local files, so every format
reader works on a file on disk and the fingerprint is of the bytes that were actually read.
"""

import glob
import http.client
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from botocore import exceptions as boto_errors

from tasks.errors import InputError, room_checked, says_no_room
from tasks.publish import (
    MISSING_AWS_CREDENTIALS, S3_TRANSPORT_FAILURES, S3Client, S3Settings, is_missing_s3_object, is_transient_s3_error,
    no_credentials_found, s3_client_for, s3_error_code, s3_http_status, without_query,
)

log = logging.getLogger(__name__)

HTTP_TIMEOUT_SECONDS = 30.0  # per connect and per read, so a slow but steady download is not cut off
HTTP_ATTEMPTS = 3  # the first try included; the flow's task retries come on top of these
RETRY_BACKOFF_SECONDS = 0.25  # doubled after each failed attempt
CHUNK_BYTES = 1 << 20

_GLOB_CHARACTERS = frozenset("*?[")
# Hidden files, and "~$name.xlsx", the lock file Excel keeps next to a workbook while it is open.
_NOT_DATA_PREFIXES = (".", "~$")
# Excel workbooks in formats that are not read; Excel saves any of them as .xlsx, which is.
_SAVE_AS_XLSX = (".xls", ".xlsm", ".xlsb")
MAX_SKIPPED_NAMED = 10  # so a folder of thousands of other files gets a warning of readable length
_RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429})  # 4xx statuses that mean "try again later"


class TransientInputError(InputError):
    """The input could not be fetched for a reason that may pass by itself (network, 5xx); retrying may help."""

    retryable = True


def shown_location(source: str) -> str:
    """The source as messages, logs and reports show it: an http(s) URL without its query.

    A presigned URL's query is its signature. Paths (a glob's '?') and S3 keys keep every character.
    """
    return without_query(source) if source.lower().startswith(("http://", "https://")) else source


@dataclass(frozen=True)
class LocalFile:
    """One input file: `name` says where it came from (path or URL), `path` where its bytes are now."""

    name: str
    path: Path


@contextmanager
def fetched(source: str, suffixes: Sequence[str], s3: S3Settings = S3Settings()) -> Iterator[list[LocalFile]]:
    """The files `source` names, sorted by name; downloads live in a temporary folder until the block ends.

    A folder, a glob or an S3 prefix ending in '/' stands for its files whose names end in one of `suffixes`;
    a warning names its other files and its sub-folders, and Excel workbooks in other formats are refused.
    S3 is reached as `s3` says, the settings the run publishes with.
    """
    scheme = _scheme(source)
    if not scheme:
        yield local_files(source, suffixes)
        return
    with tempfile.TemporaryDirectory(prefix="segments-input-") as folder:
        if scheme == "s3":
            yield download_s3(source, suffixes, Path(folder), s3)
        else:
            yield [download_http(source, Path(folder))]


def listed_files(source: str, suffixes: Sequence[str], s3: S3Settings = S3Settings()) -> list[str]:
    """Where each file `source` names is, in `fetched`'s order, without fetching any.

    Each location read on its own is that one file: a path as `fetched` names it, an s3:// object or the URL itself.
    """
    scheme = _scheme(source)
    if not scheme:
        return [file.name for file in local_files(source, suffixes)]
    if scheme == "s3":
        bucket, keys = _s3_keys(s3_client_for(s3), source, suffixes)
        return [f"s3://{bucket}/{key}" for key in keys]
    return [source]


def _scheme(source: str) -> str:
    """'s3', 'http' or 'https' for a remote source, '' for a local one; an error for any other scheme."""
    scheme = source.partition("://")[0].lower() if "://" in source else ""
    if scheme not in ("", "s3", "http", "https"):
        raise InputError(f"Input {source}: unsupported location {scheme}://; use a path, s3:// or https://.")
    return scheme


def local_files(source: str, suffixes: Sequence[str]) -> list[LocalFile]:
    """A file as given, or the data files of a folder or glob, sorted by name."""
    path = Path(source)
    if path.is_file():
        return [LocalFile(source, path)]
    if path.is_dir():
        return _listed(source, sorted(path.iterdir()), suffixes, "in the folder")
    if _GLOB_CHARACTERS & set(source):
        return _listed(source, [Path(match) for match in sorted(glob.glob(source))], suffixes, "match")
    raise InputError(f"Input {source}: no such file or folder.")


def _listed(source: str, paths: list[Path], suffixes: Sequence[str], where: str) -> list[LocalFile]:
    """The data files among `paths`; an error naming `source` if there are none."""
    data = [path for path in paths if path.is_file() and _is_data_file(path.name, suffixes)]
    read = set(data)
    _report_skipped(source, [
        f"{path}/" if path.is_dir() else str(path) for path in paths if path not in read and _may_be_data(path.name)
    ], suffixes)
    if not data:
        raise InputError(f"Input {source}: no {_or_list(suffixes)} files {where}.")
    return [LocalFile(str(path), path) for path in data]


def _is_data_file(name: str, suffixes: Sequence[str]) -> bool:
    """Whether a listed file is input data: it has one of `suffixes` and is neither hidden nor a lock file."""
    return name.lower().endswith(tuple(suffixes)) and _may_be_data(name)


def _may_be_data(name: str) -> bool:
    """Whether a listed name may be data to a user: it is neither hidden nor a lock file."""
    return not name.startswith(_NOT_DATA_PREFIXES)


def _report_skipped(source: str, skipped: list[str], suffixes: Sequence[str]) -> None:
    """Refuse Excel workbooks that are not .xlsx; warn of the other names under `source` that are not read."""
    workbooks = [name for name in skipped if name.lower().endswith(_SAVE_AS_XLSX)]
    if workbooks:
        raise InputError(
            f"Input {source}: {_some_of(workbooks)} cannot be read ({_or_list(_SAVE_AS_XLSX)} workbooks are not "
            "supported); open each in Excel and save it as .xlsx (Excel Workbook)."
        )
    if skipped:
        log.warning("Input %s: %d name(s) skipped, not %s files: %s.", source, len(skipped), _or_list(suffixes),
                    _some_of(skipped))


def _some_of(names: list[str]) -> str:
    """The first MAX_SKIPPED_NAMED of `names`, and how many more there are."""
    listed = ", ".join(names[:MAX_SKIPPED_NAMED])
    return listed if len(names) <= MAX_SKIPPED_NAMED else f"{listed} and {len(names) - MAX_SKIPPED_NAMED} more"


def _or_list(suffixes: Sequence[str]) -> str:
    """'.a, .b or .c'."""
    return ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]


# --- S3 ----------------------------------------------------------------------------------


def download_s3(url: str, suffixes: Sequence[str], folder: Path, s3: S3Settings = S3Settings()) -> list[LocalFile]:
    """Download s3://bucket/key, or every data file directly under s3://bucket/prefix/, into `folder`."""
    client = s3_client_for(s3)
    bucket, keys = _s3_keys(client, url, suffixes)
    return [_download_s3_object(client, bucket, key, folder) for key in keys]


def _s3_keys(client: S3Client, url: str, suffixes: Sequence[str]) -> tuple[str, list[str]]:
    """The bucket of s3://bucket/key and that key, or of s3://bucket/prefix/ and its data files' keys."""
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise InputError(f"Input {url}: no bucket named; use s3://bucket/key or s3://bucket/prefix/.")
    return bucket, _list_keys(client, url, bucket, key, suffixes) if key == "" or key.endswith("/") else [key]


def _list_keys(client: S3Client, url: str, bucket: str, prefix: str, suffixes: Sequence[str]) -> list[str]:
    """Keys of the data files directly under `prefix` (not in its sub-folders), sorted."""
    with _s3_errors(url, bucket):
        pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"))
    # The prefix itself is listed if it was made as a folder in the S3 console: an empty object, not data.
    keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []) if item["Key"] != prefix)
    sub_folders = sorted(item["Prefix"] for page in pages for item in page.get("CommonPrefixes", []))
    data_keys = [key for key in keys if _is_data_file(PurePosixPath(key).name, suffixes)]
    read = set(data_keys)
    _report_skipped(url, [
        key for key in keys + sub_folders if key not in read and _may_be_data(PurePosixPath(key).name)
    ], suffixes)
    if not data_keys:
        raise InputError(f"Input {url}: no {_or_list(suffixes)} objects under this prefix.")
    return data_keys


def _download_s3_object(client: S3Client, bucket: str, key: str, folder: Path) -> LocalFile:
    """Stream one object to a file in `folder` named like the object."""
    url = f"s3://{bucket}/{key}"
    path = _download_path(folder, PurePosixPath(key).name)
    with _s3_errors(url, bucket), room_checked(f"Input {url}", "its download", folder), path.open("wb") as file:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(CHUNK_BYTES):
            file.write(chunk)
    return LocalFile(url, path)


@contextmanager
def _s3_errors(url: str, bucket: str) -> Iterator[None]:
    """Turn botocore failures into InputErrors naming `url`; only those that may pass are retryable.

    The client itself (tasks.publish.make_s3_client) already retried connection errors, 5xx and throttling.
    """
    try:
        yield
    except boto_errors.ClientError as error:
        raise _explain_s3_error(error, url, bucket) from error
    except MISSING_AWS_CREDENTIALS as error:
        raise InputError(f"{no_credentials_found(f'Input {url}', error)}.") from error
    except S3_TRANSPORT_FAILURES as error:
        raise TransientInputError(
            f"Input {url}: the S3 endpoint could not be reached or stopped answering "
            f"({type(error).__name__}: {error}); retrying may help."
        ) from error


def _explain_s3_error(error: boto_errors.ClientError, url: str, bucket: str) -> InputError:
    """An InputError for an S3 error response: permanent for missing or refused, retryable for 5xx and throttling."""
    code, status = s3_error_code(error), s3_http_status(error)
    if code == "NoSuchBucket":
        problem = f"bucket {bucket!r} does not exist"
    elif is_missing_s3_object(error):
        problem = "no such object"
    elif status == 403:
        problem = f"access to bucket {bucket!r} was denied; check that the credentials are valid and may read it"
    else:
        problem = error.response.get("Error", {}).get("Message") or "the request failed"
    message = f"Input {url}: {problem} ({code or 'error'}, HTTP {status})"
    if is_transient_s3_error(error):
        return TransientInputError(f"{message}; retrying may help.")
    return InputError(f"{message}.")


# --- HTTP(S) -----------------------------------------------------------------------------


def download_http(url: str, folder: Path) -> LocalFile:
    """Stream `url` to a file in `folder`, trying again after a short pause when the failure may pass.

    The file, and every error about it, is named by its shown_location.
    """
    path = _download_path(folder, urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name))
    for attempt in range(1, HTTP_ATTEMPTS):
        try:
            _get(url, path)
            return LocalFile(shown_location(url), path)
        except TransientInputError:
            time.sleep(RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1))
    _get(url, path)  # the last attempt: its failure goes to the caller
    return LocalFile(shown_location(url), path)


def _get(url: str, path: Path) -> None:
    """One GET of `url` into `path`; failures become InputErrors, retryable when they may pass."""
    with room_checked(f"Input {shown_location(url)}", "its download", path.parent), path.open("wb") as file:
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:
                shutil.copyfileobj(response, file, CHUNK_BYTES)
        except urllib.error.HTTPError as error:
            error.close()
            raise _explain_http_status(shown_location(url), error.code, error.reason) from error
        except (OSError, http.client.HTTPException) as error:  # URLError and timeouts are OSErrors
            if says_no_room(str(error)):
                raise  # for room_checked: writing failed, not the server
            reason = getattr(error, "reason", None) or error
            raise TransientInputError(
                f"Input {shown_location(url)}: the server could not be reached or stopped answering ({reason}); retrying may help."
            ) from error


def _explain_http_status(url: str, status: int, reason: str) -> InputError:
    """An InputError for an HTTP error status: retryable for 5xx and 'try later' statuses, permanent otherwise."""
    problem = {404: "not found", 401: "access was denied", 403: "access was denied"}.get(status, reason)
    message = f"Input {url}: {problem} (HTTP {status})"
    if status >= 500 or status in _RETRYABLE_HTTP_STATUSES:
        return TransientInputError(f"{message}; retrying may help.")
    return InputError(f"{message}.")


def _download_path(folder: Path, name: str) -> Path:
    """Where a download named `name` goes; the name keeps its extension, which tells the format."""
    return folder / (name if name not in ("", ".", "..") else "download")
