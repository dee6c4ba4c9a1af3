"""Ingest: every format and layout gives the same canonical frame; bad input gets a clear error."""

import hashlib
import pickle
import zipfile
from concurrent.futures import CancelledError

import polars as pl
import pytest

from schemas import RawTransactions
from tasks.errors import InputError
from tasks.ingest import fetched_and_hashed, load_transactions
from tasks.publish import S3Settings
from tests.ingest_samples import (
    LINES, LOCAL_FORMS, ONLINE_RETAIL_II_NAMES, as_us_text, dated_lines, write_latin1_csv, write_uci_xlsx,
    xlsx_like_online_retail_ii,
)
from tests.xlsx_writer import write_xlsx


@pytest.mark.parametrize("form", LOCAL_FORMS)
def test_every_format_and_layout_gives_the_same_canonical_frame(form, tmp_path):
    transactions = load_transactions(LOCAL_FORMS[form](tmp_path)).transactions
    assert transactions.equals(LINES)
    RawTransactions.validate(transactions)


def test_online_retail_ii_names_are_mapped(tmp_path):
    LINES.rename(ONLINE_RETAIL_II_NAMES).write_parquet(tmp_path / "ii.parquet")
    assert load_transactions(tmp_path / "ii.parquet").transactions.equals(LINES)


def test_user_mapping_covers_other_exports(tmp_path):
    LINES.rename({"CustomerID": "client", "Country": "land"}).write_parquet(tmp_path / "other.parquet")
    loaded = load_transactions(tmp_path / "other.parquet", {"client": "CustomerID", "land": "Country"})
    assert loaded.transactions.equals(LINES)


@pytest.mark.parametrize("encoding, descriptions", [
    ("cp1252", ["€5 VOUCHER", "“QUOTED” – DASH", "£ é ü"]),
    ("latin-1", ["BYTE \x81 LEFT UNDEFINED BY CP1252", "£ é ü", "ÿ"]),
])
def test_non_utf8_csv_is_read_as_windows_1252_without_losing_a_byte(encoding, descriptions, tmp_path):
    lines = LINES.with_columns(Description=pl.Series(descriptions))
    (tmp_path / "lines.csv").write_bytes(as_us_text(lines).write_csv().encode(encoding))
    assert load_transactions(tmp_path / "lines.csv").transactions.equals(lines)


def test_a_utf8_csv_with_a_line_in_another_encoding_is_refused_naming_both_lines(tmp_path):
    utf8 = as_us_text(LINES).write_csv().encode()  # line 2 holds '£'
    (tmp_path / "mixed.csv").write_bytes(utf8 + as_us_text(LINES.head(1)).write_csv(include_header=False).encode("latin-1"))
    with pytest.raises(InputError, match=r"mixed\.csv: the text is UTF-8 \(line 2 has .*\) but line 5 is not"):
        load_transactions(tmp_path / "mixed.csv")


def test_fingerprint_is_size_and_sha256(tmp_path):
    path = tmp_path / "lines.parquet"
    LINES.write_parquet(path)
    fingerprint = load_transactions(path).fingerprint
    assert fingerprint.size_bytes == path.stat().st_size
    assert fingerprint.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_error_while_reading_stops_the_hash_of_the_input(tmp_path):
    # Hashing 256 MiB takes a good part of a second; it is told to stop long before.
    path = tmp_path / "large.csv"
    with path.open("wb") as stream:
        stream.truncate(256 * 1024 * 1024)
    with pytest.raises(InputError, match="refused while reading"):
        with fetched_and_hashed(str(path), S3Settings()) as (_files, hashed):
            raise InputError("refused while reading")
    assert isinstance(hashed.exception(), CancelledError)


def test_blank_numbers_and_dates_are_missing_values(tmp_path):
    # As writers that quote every field, or pad cells, write them: the guest's CustomerID is "".
    text = as_us_text(LINES).with_columns(pl.all().cast(pl.String).fill_null(""))
    padded = text.with_columns(pl.col("UnitPrice", "Quantity") + " ", pl.col("CustomerID").replace("", " "))
    for name, frame in (("quoted.csv", text), ("padded.csv", padded)):
        frame.write_csv(tmp_path / name, quote_style="always")
        assert load_transactions(tmp_path / name).transactions.equals(LINES), name
    blank_date = text.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("")).otherwise("InvoiceDate")
                                   .alias("InvoiceDate"))
    blank_date.write_csv(tmp_path / "blank_date.csv", quote_style="always")
    assert load_transactions(tmp_path / "blank_date.csv").transactions["InvoiceDate"].null_count() == 1


def test_zoned_times_keep_their_local_clock_time(tmp_path):
    zoned = LINES.with_columns(pl.col("InvoiceDate").dt.replace_time_zone("America/New_York"))
    zoned.write_parquet(tmp_path / "zoned.parquet")
    assert load_transactions(tmp_path / "zoned.parquet").transactions.equals(LINES)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("date_format", ["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M"])
def test_a_file_whose_dates_read_both_ways_takes_the_order_the_other_files_settle(date_format, tmp_path):
    # As the UCI data split by month: December 2011 ends on the 9th, November has later days.
    november, december = dated_lines(date_format, 11, [2, 17, 30]), dated_lines(date_format, 12, [1, 5, 9])
    (tmp_path / "months").mkdir()
    november.write_csv(tmp_path / "months" / "2011-11.csv")
    december.write_csv(tmp_path / "months" / "2011-12.csv")
    dates = load_transactions(tmp_path / "months").transactions["InvoiceDate"]
    assert dates.dt.month().to_list() == [11] * 3 + [12] * 3 and dates.dt.day().to_list() == [2, 17, 30, 1, 5, 9]


@pytest.mark.parametrize("date_format", ["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M:%S"])
def test_dates_that_read_both_day_first_and_month_first_are_refused(date_format, tmp_path):
    first_week = LINES.with_columns(pl.col("InvoiceDate").dt.replace(day=pl.int_range(1, 4)).dt.strftime(date_format))
    first_week.write_csv(tmp_path / "week.csv")
    with pytest.raises(InputError, match=r"week\.csv: every date in column InvoiceDate reads both month-first and "
                                         r"day-first .* e\.g\. '(01/12|12/01)/2010 08:26") as refused:
        load_transactions(tmp_path / "week.csv")
    # As the partitioned flow's Dask workers hand it to the flow.
    assert str(pickle.loads(pickle.dumps(refused.value))) == str(refused.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nowhere\.parquet: no such file"):
        load_transactions(tmp_path / "nowhere.parquet")


def test_empty_and_header_only_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(LINES.columns) + "\n")
    write_uci_xlsx(LINES.clear(), tmp_path / "header.xlsx")
    with pytest.raises(InputError, match=r"empty\.csv: the file is empty"):
        load_transactions(tmp_path / "empty.csv")
    for name in ("header.csv", "header.xlsx"):
        with pytest.raises(InputError, match=rf"{name}: there is a header but no rows"):
            load_transactions(tmp_path / name)


def test_missing_columns_are_listed_with_those_found(tmp_path):
    LINES.drop("CustomerID", "Country").write_parquet(tmp_path / "partial.parquet")
    with pytest.raises(InputError) as error:
        load_transactions(tmp_path / "partial.parquet")
    message = str(error.value)
    assert "partial.parquet" in message
    assert "CustomerID, Country missing" in message
    assert "found InvoiceNo, StockCode" in message


def test_unparseable_dates_show_values_and_rows(tmp_path):
    text = as_us_text(LINES).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("yesterday")).otherwise("InvoiceDate").alias("InvoiceDate"))
    text.write_csv(tmp_path / "dates.csv")
    with pytest.raises(InputError, match=r"dates\.csv: column InvoiceDate .*'yesterday' \(row 2\)"):
        load_transactions(tmp_path / "dates.csv")


def test_errors_in_a_workbook_name_the_sheet_and_its_row(tmp_path):
    second_year = LINES.tail(1).with_columns(pl.col("InvoiceDate").dt.strftime("%d.%m.%Y %H:%M"))
    bad_date = pl.concat([second_year, second_year.with_columns(InvoiceDate=pl.lit("31.13.2011 10:00"))])
    write_xlsx(tmp_path / "years.xlsx", {"Year 2009-2010": LINES.head(2), "Year 2010-2011": bad_date})
    expected = r"years\.xlsx, sheet 'Year 2010-2011': column InvoiceDate .*'31\.13\.2011 10:00' \(row 2\)"
    with pytest.raises(InputError, match=expected):
        load_transactions(tmp_path / "years.xlsx")


def test_non_numeric_customer_ids_are_named(tmp_path):
    guest = as_us_text(LINES).with_columns(pl.col("CustomerID").cast(pl.String).fill_null("guest"))
    guest.write_csv(tmp_path / "ids.csv")
    with pytest.raises(InputError, match=r"column CustomerID has 1 value\(s\).*'guest' \(row 2\)"):
        load_transactions(tmp_path / "ids.csv")


def test_unsupported_format_and_corrupt_files(tmp_path):
    (tmp_path / "lines.json").write_text("{}")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "broken.xlsx").write_bytes(b"this is not a zip archive")
    (tmp_path / "broken.csv.gz").write_bytes(b"\x1f\x8b this is not gzip")
    with pytest.raises(InputError, match=r"lines\.json: unsupported format \.json; use \.parquet, \.csv, \.csv\.gz, \."):
        load_transactions(tmp_path / "lines.json")
    with pytest.raises(InputError, match=r"broken\.parquet: cannot be read as \.parquet \(.+\)\.$"):
        load_transactions(tmp_path / "broken.parquet")
    with pytest.raises(InputError, match=r"broken\.xlsx: cannot be read as \.xlsx \(.*Zip.*\)\.$"):
        load_transactions(tmp_path / "broken.xlsx")
    with pytest.raises(InputError, match=r"broken\.csv\.gz: cannot be read as \.csv\.gz \(.+\)\.$"):
        load_transactions(tmp_path / "broken.csv.gz")


def test_workbooks_without_sheets_or_with_only_empty_sheets(tmp_path):
    write_xlsx(tmp_path / "no sheets.xlsx", {})
    write_xlsx(tmp_path / "blank.xlsx", {"Sheet1": pl.DataFrame(), "Sheet2": pl.DataFrame()})
    assert zipfile.is_zipfile(tmp_path / "no sheets.xlsx")
    with pytest.raises(InputError, match=r"no sheets\.xlsx: the workbook has no sheets\."):
        load_transactions(tmp_path / "no sheets.xlsx")
    with pytest.raises(InputError, match=r"blank\.xlsx: every sheet of the workbook is empty \('Sheet1', 'Sheet2'\)"):
        load_transactions(tmp_path / "blank.xlsx")


def test_a_workbook_sheet_missing_columns_is_named(tmp_path):
    path = xlsx_like_online_retail_ii(tmp_path)
    with pytest.raises(InputError, match=r"online_retail_II\.xlsx, sheet 'Year 2009-2010': required column\(s\) "
                                         r"CustomerID missing; found Invoice, .*Customer ID"):
        load_transactions(path, {"Customer ID": "Customer"})


# --- the real data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_data_exports(real_data, tmp_path_factory) -> dict[str, str]:
    """The real data written once as the UCI CSV copy (Latin-1, US dates) and as the UCI workbook."""
    folder = tmp_path_factory.mktemp("real")
    lines = pl.read_parquet(real_data)
    return {
        "csv": str(write_latin1_csv(lines, folder / "Online Retail.csv")),
        "xlsx": str(write_uci_xlsx(lines, folder / "Online Retail.xlsx")),
    }


@pytest.mark.slow
@pytest.mark.parametrize("form", ["csv", "xlsx"])
def test_real_data_in_the_uci_csv_and_xlsx_shapes_equals_the_parquet(form, real_data, real_data_exports):
    from_parquet = load_transactions(real_data).transactions
    from_export = load_transactions(real_data_exports[form]).transactions
    assert from_parquet.height == 541_909
    assert from_export.equals(from_parquet)
