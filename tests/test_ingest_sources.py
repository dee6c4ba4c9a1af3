"""Ingest locations: folders, globs, S3 over a real moto server and HTTP from a local server.

The flow retries an ingest failure only if the error has `retryable=True` (flows.segmentation.
is_transient_failure), so each error test also checks that attribute.
"""

import hashlib
import logging
import tempfile
import threading
from collections.abc import Iterator
from typing import NamedTuple
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from flows.parameters import SegmentationParameters
from flows.segmentation import customer_segmentation
from flows.serve import free_port
from tasks import publish, sources
from tasks.errors import ConfigurationError, InputError
from tasks.generate import write_generated
from tasks.ingest import SUFFIXES, load_transactions, stage_transactions
from tasks.sources import TransientInputError, shown_location
from tests.full_disk import needs_a_full_disk, writes_fail_in_temporary_folders
from tests.prefect_api import flow_run_logs, flow_run_of
from tests.ingest_samples import (
    LINES, by_month, folder_of_monthly_files, gzip_csv, latin1_csv_with_us_dates, parquet, xlsx_like_online_retail_ii,
)
from tests.s3_server import (
    TEST_ACCESS_KEY_ID, TEST_REGION, TEST_SECRET_ACCESS_KEY, assert_names_every_way_to_give_credentials,
    moto_s3_server, s3_test_client, use_no_credentials,
)

SINGLE_FILE_FORMS = {
    writer.__name__: writer for writer in (parquet, latin1_csv_with_us_dates, gzip_csv, xlsx_like_online_retail_ii)
}
BUCKET = "exports"


def is_retryable(error: InputError) -> bool:
    """What the flow's retry condition reads."""
    return getattr(error, "retryable", False)


# --- folders and globs -------------------------------------------------------------------


def test_a_folder_is_read_in_name_order_and_fingerprinted_as_a_whole(tmp_path):
    folder = Path(folder_of_monthly_files(tmp_path))
    loaded = load_transactions(folder)
    files = [folder / "2010-12.csv", folder / "2011-12.parquet"]  # README.md is not data
    listing = "".join(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n" for path in files)
    assert loaded.transactions.equals(LINES)
    assert loaded.fingerprint.size_bytes == sum(path.stat().st_size for path in files)
    assert loaded.fingerprint.sha256 == hashlib.sha256(listing.encode()).hexdigest()


def test_an_input_of_several_files_has_one_fingerprint_however_its_location_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    folder_of_monthly_files(tmp_path / "data")
    for month, lines in by_month(LINES).items():  # a glob's matches in several folders
        (tmp_path / "by-month" / month).mkdir(parents=True)
        lines.write_csv(tmp_path / "by-month" / month / "lines.csv")
    monkeypatch.chdir(tmp_path)
    for spellings in (["data", "data/", "./data", str(tmp_path / "data"), "data/../data/", "data/20*"],
                      ["by-month/*/lines.csv", "./by-month/*/lines.csv", str(tmp_path / "by-month/*/lines.csv")]):
        fingerprints = [load_transactions(spelling).fingerprint for spelling in spellings]
        assert len({fingerprint.sha256 for fingerprint in fingerprints}) == 1, spellings
        assert [fingerprint.source for fingerprint in fingerprints] == spellings  # shown as written


def test_a_file_missing_columns_in_a_folder_is_named(tmp_path):
    LINES.write_csv(tmp_path / "2011-01.csv")
    LINES.drop("Country").write_csv(tmp_path / "2011-02.csv")
    with pytest.raises(InputError, match=r"2011-02\.csv: required column\(s\) Country missing; found InvoiceNo"):
        load_transactions(tmp_path)


def test_empty_folder_and_glob_without_matches(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(InputError, match=r"no \.parquet, \.csv, \.csv\.gz or \.xlsx files in the folder"):
        load_transactions(tmp_path)
    with pytest.raises(InputError, match=r"\*\.parquet: no \.parquet, \.csv, \.csv\.gz or \.xlsx files match"):
        load_transactions(tmp_path / "*.parquet")


def skipped_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "tasks.sources" and record.levelno == logging.WARNING]


def test_files_and_folders_a_folder_or_glob_holds_but_are_not_read_are_named_in_a_warning(tmp_path, caplog):
    folder = Path(folder_of_monthly_files(tmp_path))
    (folder / "2011-01.tsv").write_text("a tab-separated month")
    (folder / "older").mkdir()
    (folder / ".DS_Store").write_bytes(b"")
    (folder / "~$2011-02.xlsx").write_bytes(b"")  # Excel's lock file, and hidden files: not data to anyone
    assert load_transactions(folder).transactions.equals(LINES)
    assert skipped_warnings(caplog) == [
        f"Input {folder}: 3 name(s) skipped, not .parquet, .csv, .csv.gz or .xlsx files: "
        f"{folder}/2011-01.tsv, {folder}/README.md, {folder}/older/."
    ]
    caplog.clear()
    load_transactions(folder / "20*")
    assert skipped_warnings(caplog) == [
        f"Input {folder}/20*: 1 name(s) skipped, not .parquet, .csv, .csv.gz or .xlsx files: {folder}/2011-01.tsv."
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_warning_of_a_flow_run_reaches_its_log_in_the_api(tmp_path):
    transactions, _ = write_generated(tmp_path / "generated", 20_000, seed=3)
    (tmp_path / "exports").mkdir()
    transactions.rename(tmp_path / "exports" / transactions.name)
    (tmp_path / "exports" / "notes.txt").write_text("not data")
    customer_segmentation(SegmentationParameters(input=str(tmp_path / "exports"), target=str(tmp_path / "artifacts"),
                                                 run_id="skipping"))
    assert "1 name(s) skipped" in flow_run_logs(flow_run_of("customer-segmentation", "skipping"))


def test_a_warning_names_the_first_ten_files_it_skips(tmp_path, caplog):
    LINES.write_csv(tmp_path / "lines.csv")
    for number in range(12):
        (tmp_path / f"{number:02d}.txt").write_text("not data")
    load_transactions(tmp_path)
    [warning] = skipped_warnings(caplog)
    assert warning.startswith(f"Input {tmp_path}: 12 name(s) skipped")
    assert warning.endswith(f"{tmp_path}/09.txt and 2 more.")


@pytest.mark.parametrize("workbook", ["2011-01.xls", "2011-01.XLSM"])
def test_excel_workbooks_in_a_folder_that_are_not_xlsx_are_refused(tmp_path, workbook):
    LINES.write_csv(tmp_path / "2010-12.csv")
    (tmp_path / workbook).write_bytes(b"a workbook")
    with pytest.raises(InputError, match=rf": {tmp_path}/{workbook} cannot be read \(\.xls, \.xlsm or \.xlsb workbooks "
                                         r"are not supported\); open each in Excel and save it as \.xlsx"):
        load_transactions(tmp_path)


def test_unsupported_location():
    with pytest.raises(InputError, match=r"ftp://shop/lines\.csv: unsupported location ftp://"):
        load_transactions("ftp://shop/lines.csv")


# --- S3 ----------------------------------------------------------------------------------


class Samples(NamedTuple):
    root: Path  # holds <form>/<file> for each single-file form
    paths: dict[str, str]  # form -> its file's path relative to root, '/'-separated


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Samples:
    """Each single-file form written once, for the servers to serve."""
    root = tmp_path_factory.mktemp("samples")
    paths = {}
    for form, write in SINGLE_FILE_FORMS.items():
        (root / form).mkdir()
        paths[form] = Path(write(root / form)).relative_to(root).as_posix()
    return Samples(root, paths)


@pytest.fixture(scope="module")
def s3_endpoint(samples, tmp_path_factory) -> Iterator[str]:
    """A moto server whose bucket holds the samples under their relative paths, and monthly/ files."""
    monthly = Path(folder_of_monthly_files(tmp_path_factory.mktemp("monthly")))
    with moto_s3_server() as endpoint_url:
        client = s3_test_client(endpoint_url)
        client.create_bucket(Bucket=BUCKET)
        for path in samples.paths.values():
            client.upload_file(str(samples.root / path), BUCKET, path)
        for path in monthly.iterdir():
            client.upload_file(str(path), BUCKET, f"monthly/{path.name}")
        client.put_object(Bucket=BUCKET, Key="monthly/older/2009-01.csv", Body=b"not read: in a sub-folder")
        client.put_object(Bucket=BUCKET, Key="monthly/", Body=b"")  # the S3 console's folder
        client.put_object(Bucket=BUCKET, Key="legacy/2010.xls", Body=b"a workbook")
        yield endpoint_url


def use_s3(monkeypatch, endpoint_url: str) -> None:
    """Point the code under test at `endpoint_url` with test credentials, through the environment as a user would."""
    settings = {"AWS_ENDPOINT_URL": endpoint_url, "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": TEST_SECRET_ACCESS_KEY, "AWS_REGION": TEST_REGION}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("form", SINGLE_FILE_FORMS)
def test_s3_object(form, samples, s3_endpoint, monkeypatch):
    use_s3(monkeypatch, s3_endpoint)
    url = f"s3://{BUCKET}/{samples.paths[form]}"
    loaded = load_transactions(url)
    assert loaded.transactions.equals(LINES)
    assert loaded.fingerprint.source == url


@pytest.mark.slow
def test_s3_prefix_reads_the_files_directly_under_it(s3_endpoint, monkeypatch, caplog):
    use_s3(monkeypatch, s3_endpoint)
    assert load_transactions(f"s3://{BUCKET}/monthly/").transactions.equals(LINES)
    assert skipped_warnings(caplog) == [
        f"Input s3://{BUCKET}/monthly/: 2 name(s) skipped, not .parquet, .csv, .csv.gz or .xlsx files: "
        "monthly/README.md, monthly/older/."
    ]


@pytest.mark.slow
def test_s3_prefix_with_an_excel_workbook_that_is_not_xlsx_is_refused(s3_endpoint, monkeypatch):
    use_s3(monkeypatch, s3_endpoint)
    with pytest.raises(InputError, match=r"legacy/2010\.xls cannot be read .* save it as \.xlsx"):
        load_transactions(f"s3://{BUCKET}/legacy/")


@pytest.mark.slow
def test_s3_is_reached_as_the_runs_s3_settings_say_without_any_endpoint_in_the_environment(
    s3_endpoint, monkeypatch, tmp_path,
):
    use_s3(monkeypatch, s3_endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    settings = publish.S3Settings(endpoint_url=s3_endpoint)
    prefix = f"s3://{BUCKET}/monthly/"
    assert load_transactions(prefix, s3=settings).transactions.equals(LINES)
    staged = stage_transactions(prefix, tmp_path / "staged", s3=settings).transactions
    assert staged.collect().equals(LINES)
    assert sources.listed_files(prefix, SUFFIXES, settings) == [f"{prefix}2010-12.csv", f"{prefix}2011-12.parquet"]


@pytest.mark.slow
@pytest.mark.parametrize("source, message", [
    ("s3://no-such-bucket/lines.parquet", r"s3://no-such-bucket/lines\.parquet: bucket 'no-such-bucket' does not exist "
                                          r"\(NoSuchBucket, HTTP 404\)\.$"),
    (f"s3://{BUCKET}/nothing.parquet", rf"s3://{BUCKET}/nothing\.parquet: no such object \(NoSuchKey, HTTP 404\)\.$"),
    (f"s3://{BUCKET}/nothing/", rf"s3://{BUCKET}/nothing/: no \.parquet, .* or \.xlsx objects under this prefix"),
], ids=["missing bucket", "missing key", "prefix without data"])
def test_s3_missing_bucket_key_or_data_is_permanent(source, message, s3_endpoint, monkeypatch):
    use_s3(monkeypatch, s3_endpoint)
    with pytest.raises(InputError, match=message) as error:
        load_transactions(source)
    assert not is_retryable(error.value)


@pytest.mark.slow
def test_s3_access_denied_is_permanent(monkeypatch):
    with moto_s3_server(enforce_auth=True) as endpoint_url:
        use_s3(monkeypatch, endpoint_url)
        with pytest.raises(InputError, match=rf"s3://{BUCKET}/lines\.parquet: access to bucket '{BUCKET}' was denied; "
                                             r"check .* \(InvalidAccessKeyId, HTTP 403\)\.$") as error:
            load_transactions(f"s3://{BUCKET}/lines.parquet")
    assert not is_retryable(error.value)


def test_s3_input_without_credentials_is_permanent_and_names_every_way_to_give_them(monkeypatch):
    use_no_credentials(monkeypatch)
    settings = publish.S3Settings(endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InputError, match=rf"^Input s3://{BUCKET}/lines\.parquet: no usable AWS credentials") as error:
        load_transactions(f"s3://{BUCKET}/lines.parquet", s3=settings)
    assert not is_retryable(error.value)
    assert_names_every_way_to_give_credentials(str(error.value))


@pytest.mark.parametrize("code, status, transient", [
    ("SlowDown", 503, True), ("InternalError", 500, True), ("TooManyRequests", 429, True),
    ("Throttling", 400, True), ("ThrottlingException", 400, True), ("RequestTimeout", 400, True),
    ("BadDigest", 400, True), ("XAmzContentSHA256Mismatch", 400, True),
    ("AccessDenied", 403, False), ("NoSuchKey", 404, False), ("", 404, False), ("InvalidArgument", 400, False),
])
def test_reading_input_and_publishing_agree_on_which_s3_errors_may_pass(code, status, transient):
    """Moto answers none of these on demand: the error responses are built as botocore builds them."""
    error = ClientError({"Error": {"Code": code, "Message": "the message"},
                         "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
    assert is_retryable(sources._explain_s3_error(error, f"s3://{BUCKET}/lines.parquet", BUCKET)) is transient
    published = publish._explain_client_error(error, BUCKET, f"s3://{BUCKET}/runs/x/report.html", publish.PUBLISHING)
    assert published.retryable is transient


@pytest.mark.slow
def test_s3_endpoint_that_does_not_answer_is_retryable(monkeypatch):
    use_s3(monkeypatch, f"http://127.0.0.1:{free_port()}")
    expected = r"lines\.parquet: the S3 endpoint could not be reached .*retrying may help"
    with pytest.raises(TransientInputError, match=expected):
        load_transactions(f"s3://{BUCKET}/lines.parquet")


# --- HTTP --------------------------------------------------------------------------------


class FlakyFileHandler(SimpleHTTPRequestHandler):
    """Serves a folder; a path in the server's `failures` answers 503 that many times before it is served."""

    def do_GET(self) -> None:
        failures = self.server.failures
        if failures.get(self.path, 0):
            failures[self.path] -= 1
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        super().do_GET()

    def log_message(self, format: str, *args) -> None:
        """Quiet: the tests check the answers, not the log."""


@pytest.fixture(scope="module")
def http_server(samples) -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server for the samples folder, in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(FlakyFileHandler, directory=str(samples.root)))
    server.failures = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def url_of(server: ThreadingHTTPServer, path: str) -> str:
    """The server's URL for a path relative to the folder it serves."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/{path}"


@pytest.mark.slow
@pytest.mark.parametrize("form", SINGLE_FILE_FORMS)
def test_http_download(form, samples, http_server):
    url = url_of(http_server, samples.paths[form])
    loaded = load_transactions(url)
    assert loaded.transactions.equals(LINES)
    assert loaded.fingerprint.source == url


@pytest.mark.slow
def test_a_presigned_urls_signature_stays_out_of_names_and_messages(samples, http_server):
    url = url_of(http_server, samples.paths["parquet"]) + "?X-Amz-Signature=s3cr3t"
    loaded = load_transactions(url)
    assert loaded.transactions.equals(LINES)
    assert loaded.fingerprint.source == url.partition("?")[0]
    with pytest.raises(InputError) as error:
        load_transactions(url_of(http_server, "parquet/missing.parquet") + "?X-Amz-Signature=s3cr3t")
    assert "s3cr3t" not in str(error.value)
    assert shown_location("months/2011-0?.csv") == "months/2011-0?.csv"  # a glob, not a query


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_presigned_urls_signature_reaches_no_published_file(samples, http_server, tmp_path):
    write_generated(samples.root / "demo", 20_000, seed=3)
    url = url_of(http_server, "demo/transactions.parquet") + "?X-Amz-Signature=s3cr3t"
    customer_segmentation(SegmentationParameters(input=url, target=str(tmp_path / "artifacts"), run_id="presigned"))
    published = [path for path in (tmp_path / "artifacts").rglob("*") if path.is_file()]
    assert any(path.name == "report.html" for path in published)
    assert not [path.name for path in published if b"s3cr3t" in path.read_bytes()]


@pytest.mark.slow
def test_http_404_is_permanent(http_server):
    url = url_of(http_server, "parquet/missing.parquet")
    with pytest.raises(InputError, match=r"missing\.parquet: not found \(HTTP 404\)\.$") as error:
        load_transactions(url)
    assert not is_retryable(error.value)


@pytest.mark.slow
def test_http_503_once_is_retried_by_the_client(samples, http_server):
    path = samples.paths["parquet"]
    http_server.failures[f"/{path}"] = 1
    assert load_transactions(url_of(http_server, path)).transactions.equals(LINES)
    assert http_server.failures[f"/{path}"] == 0


@pytest.mark.slow
def test_http_503_that_persists_is_retryable(samples, http_server):
    path = samples.paths["gzip_csv"]
    http_server.failures[f"/{path}"] = 10
    with pytest.raises(TransientInputError, match=r"HTTP 503\); retrying may help\.$") as error:
        load_transactions(url_of(http_server, path))
    assert is_retryable(error.value)
    assert http_server.failures.pop(f"/{path}") == 7  # three attempts


@pytest.mark.slow
@needs_a_full_disk
@pytest.mark.parametrize("location", ["s3", "https"])
def test_a_download_without_room_is_named_instead_of_the_input_or_the_server(
    location, samples, s3_endpoint, http_server, monkeypatch,
):
    use_s3(monkeypatch, s3_endpoint)
    path = samples.paths["parquet"]
    url = f"s3://{BUCKET}/{path}" if location == "s3" else url_of(http_server, path)
    writes_fail_in_temporary_folders(monkeypatch, Path(path).name)
    with pytest.raises(ConfigurationError) as raised:  # not retried: only freeing the disk, or TMPDIR, helps
        load_transactions(url)
    message = str(raised.value)
    assert message.startswith(f"Input {url}: no room to write its download in {tempfile.gettempdir()}/segments-input-")
    assert "No space left on device" in message and "set TMPDIR to a folder on a disk with more room" in message


@pytest.mark.slow
def test_http_connection_refused_is_retryable():
    expected = r"lines\.csv: the server could not be reached .*Connection refused"
    with pytest.raises(TransientInputError, match=expected) as error:
        load_transactions(f"http://127.0.0.1:{free_port()}/lines.csv")
    assert is_retryable(error.value)
