"""Ingest: both UCI shapes, CSV and Parquet give the same frame, clear errors for bad input."""

import gzip

import polars as pl
import pytest

from schemas import RawTransactions
from tasks.errors import InputError
from tasks.ingest import load_transactions
from tests.conftest import invoice_lines

LINES = invoice_lines(
    ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),
    ("536366", "22633", 6, "2010-12-01 08:28", 1.85, None),
    ("C536379", "D", -1, "2011-12-09 12:50", 27.5, 14527, "France"),
)


def as_us_text(frame: pl.DataFrame) -> pl.DataFrame:
    """The widely shared CSV copy's style: month-first dates without leading zeros, float CustomerID."""
    return frame.with_columns(
        pl.col("InvoiceDate").dt.strftime("%-m/%-d/%Y %-H:%M"), pl.col("CustomerID").cast(pl.Float64),
    )


def test_parquet_and_csv_give_the_same_canonical_frame(tmp_path):
    LINES.write_parquet(tmp_path / "lines.parquet")
    as_us_text(LINES).write_csv(tmp_path / "lines.csv")
    with gzip.open(tmp_path / "lines.csv.gz", "wb") as stream:
        stream.write((tmp_path / "lines.csv").read_bytes())

    frames = [load_transactions(tmp_path / name).transactions for name in ("lines.parquet", "lines.csv", "lines.csv.gz")]
    for frame in frames:
        assert frame.equals(LINES)
        RawTransactions.validate(frame)


def test_online_retail_ii_names_are_mapped(tmp_path):
    LINES.rename({"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}).write_parquet(
        tmp_path / "ii.parquet")
    assert load_transactions(tmp_path / "ii.parquet").transactions.equals(LINES)


def test_user_mapping_covers_other_exports(tmp_path):
    LINES.rename({"CustomerID": "client", "Country": "land"}).write_parquet(tmp_path / "other.parquet")
    loaded = load_transactions(tmp_path / "other.parquet", {"client": "CustomerID", "land": "Country"})
    assert loaded.transactions.equals(LINES)


def test_fingerprint_is_size_and_sha256(tmp_path):
    import hashlib

    path = tmp_path / "lines.parquet"
    LINES.write_parquet(path)
    fingerprint = load_transactions(path).fingerprint
    assert fingerprint.size_bytes == path.stat().st_size
    assert fingerprint.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nowhere\.parquet: no such file"):
        load_transactions(tmp_path / "nowhere.parquet")


def test_empty_and_header_only_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(LINES.columns) + "\n")
    with pytest.raises(InputError, match="empty"):
        load_transactions(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="header but no rows"):
        load_transactions(tmp_path / "header.csv")


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


def test_non_numeric_customer_ids_are_named(tmp_path):
    as_us_text(LINES).with_columns(pl.col("CustomerID").cast(pl.String).fill_null("guest")).write_csv(tmp_path / "ids.csv")
    with pytest.raises(InputError, match=r"column CustomerID has 1 value\(s\).*'guest' \(row 2\)"):
        load_transactions(tmp_path / "ids.csv")


def test_unsupported_format_and_corrupt_file(tmp_path):
    (tmp_path / "lines.json").write_text("{}")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"unsupported format \.json"):
        load_transactions(tmp_path / "lines.json")
    with pytest.raises(InputError, match=r"broken\.parquet: cannot be read"):
        load_transactions(tmp_path / "broken.parquet")


@pytest.mark.slow
def test_real_data_parquet_and_us_csv_agree(real_data, tmp_path):
    from_parquet = load_transactions(real_data).transactions
    as_us_text(from_parquet).write_csv(tmp_path / "online_retail.csv")
    from_csv = load_transactions(tmp_path / "online_retail.csv").transactions
    assert from_parquet.height == 541_909
    assert from_csv.equals(from_parquet)
