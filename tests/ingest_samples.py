"""The same few invoice lines written in every supported format and layout, for the ingest tests."""

import gzip
from collections.abc import Callable
from pathlib import Path

import polars as pl

from tests.conftest import invoice_lines
from tests.xlsx_writer import write_xlsx

# Each month has a day after the 12th, so text dates read only one way round, even month by month.
LINES = invoice_lines(
    ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),
    ("536366", "22633", 6, "2010-12-14 08:28", 1.85, None),
    ("C536379", "D", -1, "2011-12-19 12:50", 27.5, 14527, "France"),
).with_columns(Description=pl.Series(["HEART T-LIGHT £1", "Café mug", "Rabatt für Tüten"]))  # Latin-1, not ASCII

ONLINE_RETAIL_II_NAMES = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}


def as_us_text(frame: pl.DataFrame) -> pl.DataFrame:
    """The widely shared CSV copy's style: month-first dates without leading zeros, float CustomerID."""
    return frame.with_columns(
        pl.col("InvoiceDate").dt.strftime("%-m/%-d/%Y %-H:%M"), pl.col("CustomerID").cast(pl.Float64),
    )


def by_month(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The lines split into one frame per invoice month, keyed "YYYY-MM"."""
    return {
        month: lines.drop("month")
        for (month,), lines in frame.with_columns(month=pl.col("InvoiceDate").dt.strftime("%Y-%m"))
        .partition_by("month", as_dict=True, maintain_order=True).items()
    }


def dated_lines(date_format: str, month: int, days: list[int]) -> pl.DataFrame:
    """LINES on these days of a month of 2011, their dates as text in `date_format`."""
    return LINES.with_columns(pl.datetime(2011, month, pl.Series(days), 10).dt.strftime(date_format)
                              .alias("InvoiceDate"))


def write_latin1_csv(frame: pl.DataFrame, path: Path) -> Path:
    """The frame as the UCI CSV copy is shared: Latin-1 bytes, US dates."""
    path.write_bytes(as_us_text(frame).write_csv().encode("latin-1"))
    return path


def write_uci_xlsx(frame: pl.DataFrame, path: Path) -> Path:
    """The frame as the UCI workbook holds it: numeric invoice numbers and stock codes are numbers."""
    return write_xlsx(path, {"Online Retail": frame}, numeric_text=("InvoiceNo", "StockCode"))


def parquet(folder: Path) -> str:
    """lines.parquet."""
    LINES.write_parquet(folder / "lines.parquet")
    return str(folder / "lines.parquet")


def utf8_csv(folder: Path) -> str:
    """lines.csv in UTF-8 with ISO dates, as Polars writes it."""
    LINES.write_csv(folder / "lines.csv")
    return str(folder / "lines.csv")


def latin1_csv_with_us_dates(folder: Path) -> str:
    """lines.csv in Latin-1 with dates like 12/1/2010 8:26."""
    return str(write_latin1_csv(LINES, folder / "lines.csv"))


def gzip_csv(folder: Path) -> str:
    """lines.csv.gz: gzip-compressed UTF-8 CSV with US dates."""
    with gzip.open(folder / "lines.csv.gz", "wb") as stream:
        stream.write(as_us_text(LINES).write_csv().encode())
    return str(folder / "lines.csv.gz")


def xlsx_from_xlsxwriter(folder: Path) -> str:
    """lines.xlsx with one sheet, written by xlsxwriter (through Polars), every text cell as text."""
    LINES.write_excel(folder / "lines.xlsx")
    return str(folder / "lines.xlsx")


def xlsx_like_uci(folder: Path) -> str:
    """Online Retail.xlsx with one sheet, numeric invoice numbers as numbers."""
    return str(write_uci_xlsx(LINES, folder / "Online Retail.xlsx"))


def xlsx_like_online_retail_ii(folder: Path) -> str:
    """Two sheets, "Year 2009-2010" and "Year 2010-2011", with the Online Retail II column names."""
    first_year, second_year = LINES.head(2), LINES.tail(1)
    sheets = {"Year 2009-2010": first_year, "Year 2010-2011": second_year}
    renamed = {name: sheet.rename(ONLINE_RETAIL_II_NAMES) for name, sheet in sheets.items()}
    return str(write_xlsx(folder / "online_retail_II.xlsx", renamed, numeric_text=("Invoice", "StockCode")))


def folder_of_monthly_files(folder: Path) -> str:
    """A CSV for one month, Parquet for the next, and a README that is not data."""
    (december_2010, december_2011) = by_month(LINES).values()
    december_2010.write_csv(folder / "2010-12.csv")
    december_2011.write_parquet(folder / "2011-12.parquet")
    (folder / "README.md").write_text("Monthly exports from the shop system.\n")
    return str(folder)


def glob_of_monthly_files(folder: Path) -> str:
    """One Latin-1 CSV per month, named by a glob."""
    for month, lines in by_month(LINES).items():
        write_latin1_csv(lines, folder / f"{month}.csv")
    return str(folder / "20??-*.csv")


LOCAL_FORMS: dict[str, Callable[[Path], str]] = {
    writer.__name__: writer for writer in (
        parquet, utf8_csv, latin1_csv_with_us_dates, gzip_csv, xlsx_from_xlsxwriter, xlsx_like_uci,
        xlsx_like_online_retail_ii, folder_of_monthly_files, glob_of_monthly_files,
    )
}
