"""Hostile and broken inputs: each is either read faithfully or refused with one clear paragraph.

A refusal is an InputError naming the file (and sheet), the column and rows where that applies, and
what to do. Some odd inputs are data, not errors: implausible dates and NaN prices are quarantined by
cleaning (and counted in its quality report), big quantities are kept exactly, Windows-1252 text is
decoded. Header-only CSV and .xlsx files, workbooks without sheets and non-numeric CustomerIDs are
covered in test_ingest.py.
"""

import gzip
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from tasks import ingest
from tasks.clean import clean_transactions
from tasks.errors import ConfigurationError, InputError
from tasks.generate import generate_transactions
from tasks.ingest import ChildDecoder, load_transactions, stage_transactions
from tests.full_disk import needs_a_full_disk, writes_fail_in_temporary_folders
from tests.ingest_samples import LINES, as_us_text, write_latin1_csv
from tests.xlsx_writer import write_xlsx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEN_MEBIBYTES = 10 * 2**20
SHEET = "xl/worksheets/sheet1.xml"


def csv_with(path: Path, **columns: list) -> Path:
    """LINES as a UTF-8 CSV with the given columns' values replaced by text."""
    LINES.with_columns(pl.Series(name, values, dtype=pl.String) for name, values in columns.items()).write_csv(path)
    return path


def refusal(path: Path, **options) -> str:
    """The message of the InputError that loading `path` raises; it must be one paragraph of modest length."""
    with pytest.raises(InputError) as error:
        load_transactions(path, **options)
    message = str(error.value)
    assert path.name in message and "\n" not in message and len(message) < 1_000
    return message


def rules_by_row(path: Path) -> dict[int, str]:
    """Cleaning's verdict on each quarantined row of the loaded file."""
    quarantine = clean_transactions(load_transactions(path).transactions).quarantine
    return dict(quarantine.select("source_row", "rule").iter_rows())


# --- damaged files -------------------------------------------------------------------------


def test_truncated_parquet_asks_for_a_new_copy(tmp_path):
    LINES.write_parquet(tmp_path / "whole.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:-100])
    message = refusal(tmp_path / "cut.parquet")
    assert "cannot be read as .parquet" in message
    assert "may be truncated" in message and "download or export it again" in message


def test_csv_with_a_binary_blob_names_its_lines(tmp_path):
    header, first, *rest = as_us_text(LINES).write_csv().encode().splitlines(keepends=True)
    (tmp_path / "blob.csv").write_bytes(b"".join([header, first, b"\x00\x01PK\x03\x04\xff\xfe\x00,\x00\n", *rest]))
    message = refusal(tmp_path / "blob.csv")
    assert "control characters such as NUL bytes" in message and "line(s) 3:" in message
    assert "part of the file is binary" in message and "Remove those lines" in message


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_csv_is_named_as_such_not_as_binary(tmp_path, encoding):
    # As Excel saves "Unicode Text": a byte-order mark, then tab-separated UTF-16.
    text = "\ufeff" + LINES.write_csv(separator="\t")
    (tmp_path / "unicode.csv").write_bytes(text.encode(encoding))
    message = refusal(tmp_path / "unicode.csv")
    assert "the file is UTF-16 text" in message and 'save it as "CSV UTF-8 (Comma delimited)"' in message
    assert "binary" not in message


def test_a_csv_that_is_binary_throughout_names_only_its_first_lines(tmp_path):
    (tmp_path / "noise.csv").write_bytes(bytes(range(256)) * 4_000)
    assert "line(s) 1, 2, 3, 4, 5:" in refusal(tmp_path / "noise.csv")


def test_a_parquet_file_with_one_damaged_byte_does_not_take_the_process_down(tmp_path):
    # With the pinned Polars (2.1) this byte is in a page header, and reading the file in-process aborts
    # Python: "memory allocation of 2305843009213693944 bytes failed". Decoding runs in a child process.
    LINES.write_parquet(tmp_path / "whole.parquet")
    damaged = bytearray((tmp_path / "whole.parquet").read_bytes())
    damaged[62] = 0x7F
    (tmp_path / "flipped.parquet").write_bytes(damaged)
    message = refusal(tmp_path / "flipped.parquet")
    assert "cannot be read as .parquet" in message and "download or export it again" in message


def test_the_decoding_child_is_kept_for_the_next_file_however_much_memory_its_parent_holds(tmp_path, monkeypatch):
    # Starting a child costs a Python start and a Polars import (about 0.4 s here). It is let go only
    # when it has itself held a lot of memory: a flow run holds hundreds of MB, which Linux would report
    # as the child's peak too unless the child asks /proc.
    decoder = ChildDecoder()
    monkeypatch.setattr(ingest, "_decoder", decoder)
    LINES.write_parquet(tmp_path / "lines.parquet")
    parent_memory = b"\x01" * (2 * ingest._CHILD_PEAK_MIB * 2**20)  # written, so resident
    load_transactions(tmp_path / "lines.parquet")
    child = decoder._child
    assert child is not None
    assert load_transactions(tmp_path / "lines.parquet").transactions.equals(LINES)
    assert decoder._child is child and child.poll() is None
    del parent_memory
    ingest._reaped(decoder._let_go())


def test_the_kept_child_reads_a_relative_path_where_its_parent_is_now(tmp_path, monkeypatch):
    # The child keeps the working folder it started in; a relative path told to it would name another file.
    decoder = ChildDecoder()
    monkeypatch.setattr(ingest, "_decoder", decoder)
    for folder, lines in (("first", LINES.head(2)), ("second", LINES)):
        (tmp_path / folder).mkdir()
        lines.write_parquet(tmp_path / folder / "lines.parquet")
    monkeypatch.chdir(tmp_path / "first")
    assert load_transactions("lines.parquet").transactions.equals(LINES.head(2))
    monkeypatch.chdir(tmp_path / "second")
    assert load_transactions("lines.parquet").transactions.equals(LINES)
    ingest._reaped(decoder._let_go())


def test_a_workbook_with_cells_far_apart_does_not_take_the_process_down(tmp_path):
    # The Excel reader allocates the sheet's whole range: A1 to XFD1048576 is 17 billion cells.
    path = with_edited_part(write_xlsx(tmp_path / "sparse.xlsx", {"Sheet1": LINES}), SHEET, lambda sheet: (
        sheet.replace(b'<row r="4">', b'<row r="1048576">').replace(b'r="H4"', b'r="XFD1048576"')))
    assert "cannot be read as .xlsx (the reader crashed on its contents with SIG" in refusal(path)


# --- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", [";", "\t"])
def test_semicolon_and_tab_separated_csv_are_detected_from_the_header(separator, tmp_path):
    # Detected rather than refused: the header has to name eight columns, so the character that
    # splits it is unambiguous, and locales that write ';' have no option to write ',' instead.
    as_us_text(LINES).write_csv(tmp_path / "lines.csv", separator=separator)
    assert load_transactions(tmp_path / "lines.csv").transactions.equals(LINES)


def test_a_csv_with_another_separator_is_refused_naming_the_single_field_it_saw(tmp_path):
    as_us_text(LINES).write_csv(tmp_path / "piped.csv", separator="|")
    message = refusal(tmp_path / "piped.csv")
    assert "the header is a single field (InvoiceNo|StockCode|" in message
    assert "separated by commas, semicolons or tabs" in message


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz"])
def test_header_only_parquet_and_gzip_csv_say_there_are_no_rows(suffix, tmp_path):
    path = tmp_path / f"header{suffix}"
    if suffix == ".parquet":
        LINES.clear().write_parquet(path)
    else:
        path.write_bytes(gzip.compress(",".join(LINES.columns).encode() + b"\n"))
    assert "there is a header but no rows; check that the export ran to the end" in refusal(path)


def test_a_valid_line_over_10_mb_is_read_whole(tmp_path):
    description = "WORD " * (TEN_MEBIBYTES // 5 + 1)
    csv_with(tmp_path / "long.csv", Description=[description, "short", "short"])
    assert load_transactions(tmp_path / "long.csv").transactions["Description"][0] == description.strip()


def test_a_10_mb_line_of_garbage_gets_a_short_message(tmp_path):
    (tmp_path / "garbage.csv").write_bytes(b"x" * (TEN_MEBIBYTES + 1))
    message = refusal(tmp_path / "garbage.csv")
    assert "the header is a single field (xxxxxxxx" in message and "…)" in message


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_duplicated_column_names_are_named(suffix, tmp_path):
    # Readers rename a second "Quantity" ("Quantity_duplicated_0", "Quantity_1"), which would silently
    # read the first of the two; a repeated column that is not read is harmless and allowed.
    lines = LINES.with_columns(Quantity_2=pl.col("Quantity") * 10, Notes=pl.lit("a"), Notes_2=pl.lit("b"))
    path = write_with_header(tmp_path / f"twice{suffix}", lines, [*LINES.columns, "Quantity", "Notes", "Notes"])
    message = refusal(path)
    assert "duplicated column(s) Quantity ('Quantity', 'Quantity')" in message
    assert "Notes" not in message
    assert "Remove or rename the extra column(s)" in message


def test_two_names_for_one_column_are_named(tmp_path):
    LINES.with_columns(Invoice=pl.col("InvoiceNo")).write_parquet(tmp_path / "both.parquet")
    assert "duplicated column(s) InvoiceNo ('InvoiceNo', 'Invoice')" in refusal(tmp_path / "both.parquet")


def test_a_column_of_the_wrong_type_is_named_with_its_type(tmp_path):
    LINES.with_columns(Quantity=pl.col("InvoiceDate").dt.date(), StockCode=pl.concat_list("Quantity")).write_parquet(
        tmp_path / "types.parquet")
    message = refusal(tmp_path / "types.parquet")
    assert "column StockCode holds List(Int64) values, which cannot be read as text" in message
    assert "column Quantity holds Date values, which cannot be read as a whole number" in message


# --- values ----------------------------------------------------------------------------------


def test_mixed_date_formats_in_one_column_are_refused_with_examples_and_rows(tmp_path):
    # One format per column: read value by value, "1/2/2011" and "2/1/2011" could be read with
    # different day-month orders in the same column, swapping days and months without a word.
    csv_with(tmp_path / "dates.csv", InvoiceDate=["2010-12-01 08:26", "12/1/2010 8:28", "01.12.2010 09:00"])
    message = refusal(tmp_path / "dates.csv")
    assert "column InvoiceDate has 2 value(s) that cannot be read as a date in the format %Y-%m-%d %H:%M" in message
    assert "'12/1/2010 8:28' (row 2), '01.12.2010 09:00' (row 3)" in message
    assert "one format per column" in message


def test_dates_in_the_future_or_before_1990_are_quarantined_not_refused(tmp_path):
    csv_with(tmp_path / "dates.csv", InvoiceDate=["2999-01-01 00:00", "1989-12-31 23:59", "2011-12-09 12:50"],
             CustomerID=["17850", "17850", "14527"])
    assert rules_by_row(tmp_path / "dates.csv") == {0: "implausible_date", 1: "implausible_date", 2: "cancellation"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_quantities_beyond_int32_are_kept_exactly(suffix, tmp_path):
    quantities = [3_000_000_000, 2**53 + 1, -(2**63)]  # 2**53 + 1 is the first whole number a float cannot hold
    big, path = LINES.with_columns(Quantity=pl.Series(quantities)), tmp_path / f"big{suffix}"
    if suffix == ".csv":
        big.write_csv(path)
    else:
        big.write_parquet(path)
    assert load_transactions(path).transactions["Quantity"].to_list() == quantities


@pytest.mark.parametrize("quantity", ["9223372036854775808", "1e30", "-99999999999999999999"])
def test_quantities_beyond_int64_are_refused(quantity, tmp_path):
    csv_with(tmp_path / "huge.csv", Quantity=["6", quantity, "-1"])
    expected = (f"column Quantity has 1 value(s) that cannot be read as a whole number within "
                f"±9,223,372,036,854,775,807 (Int64), e.g. '{quantity}' (row 2)")
    assert expected in refusal(tmp_path / "huge.csv")


def test_nan_and_infinite_prices_are_quarantined_not_refused(tmp_path):
    csv_with(tmp_path / "prices.csv", UnitPrice=["NaN", "inf", "-inf"], CustomerID=["17850", "17850", "17850"])
    rules = rules_by_row(tmp_path / "prices.csv")
    assert rules == {0: "non_positive_price", 1: "non_positive_price", 2: "cancellation"}


def test_negative_customer_ids_are_guest_placeholders(tmp_path):
    csv_with(tmp_path / "guests.csv", CustomerID=["-1", "17850", "14527"])
    assert rules_by_row(tmp_path / "guests.csv")[0] == "missing_customer_id"


def test_blank_invoice_numbers_are_missing_fields(tmp_path):
    csv_with(tmp_path / "blank.csv", InvoiceNo=[" ", "536366", "C536379"])
    assert rules_by_row(tmp_path / "blank.csv")[0] == "missing_field"


def test_windows_1252_bytes_in_a_description_are_decoded_without_loss(tmp_path):
    text = as_us_text(LINES).write_csv().encode("cp1252").replace("Café mug".encode("cp1252"), b"\x80 \x93Caf\xe9\x94 \x81")
    (tmp_path / "cp1252.csv").write_bytes(text)
    descriptions = load_transactions(tmp_path / "cp1252.csv").transactions["Description"]
    assert descriptions[1] == "€ “Café” \x81"  # 0x81 is undefined in Windows-1252: kept as U+0081


def test_windows_1252_text_holding_utf8_like_bytes_is_not_taken_for_mixed_encodings(tmp_path):
    # 'é', a no-break space and '»' are the bytes E9 A0 BB: a valid UTF-8 character, on a line that is not UTF-8.
    french = LINES.with_columns(Description=pl.Series(["CAFÉ\xa0» MUG", "THÉ\xa0» BOX", "£ ü"]))
    (tmp_path / "fr.csv").write_bytes(as_us_text(french).write_csv().encode("cp1252"))
    assert load_transactions(tmp_path / "fr.csv").transactions["Description"].equals(french["Description"])


# --- a full scratch disk --------------------------------------------------------------------

# Reads argv[1] (streamed into argv[2] if given) with every file it writes limited to 32 KiB, as `ulimit -f 32` sets,
# and prints the error. The decoding child inherits the limit; Python ignores SIGXFSZ, so a longer write fails: EFBIG.
READ_UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from pathlib import Path
from tasks.ingest import load_transactions, stage_transactions
resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
try:
    stage_transactions(sys.argv[1], Path(sys.argv[2])) if len(sys.argv) > 2 else load_transactions(sys.argv[1])
except Exception as error:
    print(f"{type(error).__name__}: {error}")
"""


# Each form of 5,000 generated lines and how it is written: decoded, each is over 32 KiB, in the Arrow files the
# child writes or in what the parent writes, a UTF-8 copy or (streamed) Parquet batches.
OVERSIZED_FORMS = {
    "parquet": ("lines.parquet", pl.DataFrame.write_parquet),
    "xlsx": ("lines.xlsx", lambda lines, path: write_xlsx(path, {"Sheet1": lines})),
    "windows-1252 csv": ("lines.csv", write_latin1_csv),
    "streamed csv": ("lines.csv", pl.DataFrame.write_csv),
}


@pytest.mark.parametrize("form", OVERSIZED_FORMS)
def test_a_scratch_folder_without_room_is_named_instead_of_the_input(form, tmp_path):
    name, write = OVERSIZED_FORMS[form]
    path = tmp_path / name
    write(generate_transactions(5_000).transactions.with_columns(pl.col("Description") + " £"), path)
    folder = tmp_path / "staged" if form == "streamed csv" else tempfile.gettempdir()
    arguments = [str(path), str(folder)] if form == "streamed csv" else [str(path)]
    run = subprocess.run([sys.executable, "-c", READ_UNDER_A_FILE_SIZE_LIMIT, *arguments],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert run.stdout.startswith(f"ConfigurationError: Input {path}: no room to write its decoded lines in {folder} ("), \
        run.stdout + run.stderr
    assert "File too large" in run.stdout and "the input is not at fault" in run.stdout
    assert "set TMPDIR to a folder on a disk with more room" in run.stdout


@needs_a_full_disk
def test_a_full_disk_under_the_decoding_child_is_named_instead_of_the_input(tmp_path, monkeypatch):
    writes_fail_in_temporary_folders(monkeypatch, "0.arrow")  # the scratch folder's first table
    LINES.write_parquet(tmp_path / "lines.parquet")
    with pytest.raises(ConfigurationError) as raised:
        load_transactions(tmp_path / "lines.parquet")
    assert f"no room to write its decoded lines in {tempfile.gettempdir()} (No space left on device" in str(raised.value)


# --- size limits -----------------------------------------------------------------------------


class DecoderThatMustNotBeAsked:
    """Stands in for ingest's decoding child: a test fails as soon as it asks the child anything."""

    def column_sizes(self, file, *_):
        pytest.fail(f"the decoder was asked the size of {file.name}")

    def decode(self, file, *_):
        pytest.fail(f"the decoder was asked to decode {file.name}")


def test_an_xlsx_declaring_a_huge_size_is_refused_before_anything_is_decompressed(tmp_path, monkeypatch):
    path = write_xlsx(tmp_path / "bomb.xlsx", {"Sheet1": LINES})
    path.write_bytes(with_declared_size(path.read_bytes(), SHEET, 3 * 2**30))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *_, **__: pytest.fail("a part was decompressed"))
    monkeypatch.setattr(ingest, "_decoder", DecoderThatMustNotBeAsked())  # it decompresses in its own process
    message = refusal(path)
    assert "the uncompressed size of the workbook is 3.0 GiB, over the 2.0 GiB limit" in message
    assert "SEGMENTS_MAX_EAGER_BYTES" in message


def test_a_streamed_xlsx_declaring_a_huge_size_is_refused_too(tmp_path, monkeypatch):
    # Streaming reads CSV and Parquet in batches, but a workbook whole, in the child and then in the parent.
    path = write_xlsx(tmp_path / "bomb.xlsx", {"Sheet1": LINES})
    path.write_bytes(with_declared_size(path.read_bytes(), SHEET, 3 * 2**30))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *_, **__: pytest.fail("a part was decompressed"))
    monkeypatch.setattr(ingest, "_decoder", DecoderThatMustNotBeAsked())
    with pytest.raises(InputError) as raised:
        stage_transactions(path, tmp_path / "staged")
    message = str(raised.value)
    assert "the uncompressed size of the workbook is 3.0 GiB, over the 2.0 GiB limit (SEGMENTS_MAX_EAGER_BYTES)" in message
    assert "even when the input is streamed, because a workbook is read whole" in message
    assert "Save its sheets as CSV, which streams" in message


def test_an_xlsx_read_for_the_dates_that_settle_day_and_month_is_held_to_the_limit(tmp_path, monkeypatch):
    # The dates of 2011-01.csv read both day-first and month-first, so every file is read for dates that settle it.
    (LINES.with_columns(pl.col("InvoiceDate").dt.replace(day=pl.int_range(1, 4)).dt.strftime("%d/%m/%Y %H:%M"))
     .write_csv(tmp_path / "2011-01.csv"))
    path = write_xlsx(tmp_path / "2011-02.xlsx", {"Sheet1": LINES})
    path.write_bytes(with_declared_size(path.read_bytes(), SHEET, 3 * 2**30))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *_, **__: pytest.fail("a part was decompressed"))
    monkeypatch.setattr(ingest, "_decoder", DecoderThatMustNotBeAsked())
    assert "2011-02.xlsx: the uncompressed size of the workbook is 3.0 GiB, over the 2.0 GiB limit" in refusal(tmp_path)


def test_an_xlsx_hiding_its_size_is_refused_by_its_checksum(tmp_path):
    path = tmp_path / "hidden.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(SHEET, b" " * (64 * 2**20))
    path.write_bytes(with_declared_size(path.read_bytes(), SHEET, 1_000))
    assert f"part {SHEET} does not match its checksum" in refusal(path)


def test_an_xlsx_expanding_beyond_a_lower_limit_is_refused(tmp_path):
    path = write_xlsx(tmp_path / "lines.xlsx", {"Sheet1": LINES})
    message = refusal(path, max_eager_bytes=1_000)
    assert "the uncompressed size of the workbook is" in message and "over the 1,000 bytes limit" in message


def test_a_csv_over_the_limit_set_in_the_environment_is_refused_and_streams(tmp_path, monkeypatch):
    LINES.write_csv(tmp_path / "lines.csv")
    monkeypatch.setenv("SEGMENTS_MAX_EAGER_BYTES", "100")
    message = refusal(tmp_path / "lines.csv")
    assert "its size as text is" in message and "over the 100 bytes limit for the in-memory stages" in message
    assert "Stream it through the stages (--streaming true)" in message
    staged = stage_transactions(tmp_path / "lines.csv", tmp_path / "staged")  # what that advice runs
    assert staged.transactions.collect().equals(load_transactions(tmp_path / "lines.csv", max_eager_bytes=10**6).transactions)


def test_a_parquet_file_is_measured_by_its_size_in_memory(tmp_path):
    LINES.write_parquet(tmp_path / "lines.parquet")
    in_memory = pl.read_parquet(tmp_path / "lines.parquet").estimated_size()
    message = refusal(tmp_path / "lines.parquet", max_eager_bytes=in_memory - 1)
    assert f"the estimated size in memory of the 8 columns read is {in_memory:,} bytes" in message


def test_a_parquet_file_is_measured_by_the_columns_read_only(tmp_path, monkeypatch):
    # Forty wide columns besides the eight ingest reads, two of those under other names (a known alias and one
    # the user maps): the in-memory stages never hold the forty, so they must not count against the limit.
    notes = {f"Note{index}": [f"{index}-{row}-" + "x" * 1_000 for row in range(LINES.height)] for index in range(40)}
    renamed = LINES.rename({"UnitPrice": "Price", "CustomerID": "Kunde"})
    renamed.with_columns(**notes).write_parquet(tmp_path / "wide.parquet")
    in_memory = pl.read_parquet(tmp_path / "wide.parquet", columns=renamed.columns).estimated_size()
    monkeypatch.setenv("SEGMENTS_MAX_EAGER_BYTES", str(in_memory))
    assert load_transactions(tmp_path / "wide.parquet", {"Kunde": "CustomerID"}).transactions.equals(LINES)
    monkeypatch.setenv("SEGMENTS_MAX_EAGER_BYTES", str(in_memory - 1))
    message = refusal(tmp_path / "wide.parquet", column_mapping={"Kunde": "CustomerID"})
    assert f"the estimated size in memory of the 8 columns read is {in_memory:,} bytes" in message


class DecoderKeepingWhatItWrote(ChildDecoder):
    """The decoding child, noting the columns of each Parquet file it writes to the scratch folder."""

    def decode(self, file, suffix, folder, columns=None):
        sheets = super().decode(file, suffix, folder, columns)
        self.written = list(pl.read_ipc_schema(folder / "0.arrow"))
        return sheets


def test_only_the_columns_read_of_a_parquet_file_are_decoded_to_the_scratch_folder(tmp_path, monkeypatch):
    decoder = DecoderKeepingWhatItWrote()
    monkeypatch.setattr(ingest, "_decoder", decoder)
    renamed = LINES.rename({"UnitPrice": "Price", "CustomerID": "Kunde"})
    renamed.with_columns(Note=pl.lit("x" * 1_000), Channel=pl.lit("web")).write_parquet(tmp_path / "wide.parquet")
    assert load_transactions(tmp_path / "wide.parquet", {"Kunde": "CustomerID"}).transactions.equals(LINES)
    assert decoder.written == renamed.columns
    ingest._reaped(decoder._let_go())


class DecoderSizingOnly(ChildDecoder):
    """The decoding child, except that a test fails if it is asked to decode."""

    def decode(self, file, *_):
        pytest.fail(f"the decoder was asked to decode {file.name}")


def test_a_parquet_file_without_a_column_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    decoder = DecoderSizingOnly()
    monkeypatch.setattr(ingest, "_decoder", decoder)
    LINES.drop("Country").write_parquet(tmp_path / "no-country.parquet")
    with pytest.raises(InputError, match=r"no-country.parquet: required column\(s\) Country missing"):
        load_transactions(tmp_path / "no-country.parquet")
    ingest._reaped(decoder._let_go())


def test_the_files_of_a_folder_share_the_limit(tmp_path):
    for month in ("2010-12", "2011-01"):
        LINES.write_csv(tmp_path / f"{month}.csv")
    one_file = (tmp_path / "2010-12.csv").stat().st_size
    message = refusal(tmp_path, max_eager_bytes=one_file * 3 // 2)
    assert "2011-01.csv" in message and f"on top of {one_file:,} bytes from the files before it" in message


@pytest.mark.parametrize("setting", ["2GB", "-1", "0", "1.5e9"])
def test_a_limit_that_is_not_a_positive_whole_number_is_a_configuration_error(setting, tmp_path, monkeypatch):
    LINES.write_csv(tmp_path / "lines.csv")
    monkeypatch.setenv("SEGMENTS_MAX_EAGER_BYTES", setting)
    with pytest.raises(ConfigurationError, match=rf"SEGMENTS_MAX_EAGER_BYTES='{setting}' is not a positive whole"):
        load_transactions(tmp_path / "lines.csv")


def write_with_header(path: Path, frame: pl.DataFrame, header: list[str]) -> Path:
    """The frame as .csv or .xlsx (by the suffix) under `header`, whose names may repeat."""
    if path.suffix == ".csv":
        path.write_text(",".join(header) + "\n" + frame.write_csv(include_header=False))
        return path
    placeholders = [f"column{index}" for index in range(frame.width)]
    write_xlsx(path, {"Sheet1": frame.rename(dict(zip(frame.columns, placeholders)))})

    def named(sheet: bytes) -> bytes:
        for placeholder, name in zip(placeholders, header):
            sheet = sheet.replace(f">{placeholder}<".encode(), f">{name}<".encode())
        return sheet

    return with_edited_part(path, SHEET, named)


def with_edited_part(path: Path, part: str, edit: Callable[[bytes], bytes]) -> Path:
    """The zip archive at `path` with the bytes of `part` edited."""
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts[part] = edit(parts[part])
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def with_declared_size(archive: bytes, part: str, size: int) -> bytes:
    """The zip archive with the uncompressed size its central directory declares for `part` replaced by `size`."""
    data = bytearray(archive)
    entry = data.find(b"PK\x01\x02")
    while entry >= 0:
        name_length = int.from_bytes(data[entry + 28:entry + 30], "little")
        if data[entry + 46:entry + 46 + name_length] == part.encode():
            data[entry + 24:entry + 28] = size.to_bytes(4, "little")
        entry = data.find(b"PK\x01\x02", entry + 46)
    return bytes(data)
