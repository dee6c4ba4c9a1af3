"""Fuzzing the ingest + cleaning entry: whatever the file holds, the only exception is the project's own.

Hypothesis writes arbitrary bytes and structured-but-broken CSV, Parquet and .xlsx content to a file
(mostly under its own suffix, sometimes under another) and calls `load_transactions`, then
`clean_transactions`. Loading may refuse with a SegmentsError of one paragraph; any other exception,
a crash of a reader, or a cleaning that fails on what ingest returned fails the test. The structured
files are mostly plausible invoice lines with edge values (blanks, placeholders, huge numbers, NaN,
dates far off), odd cells, names, types and damage mixed in, so that many get through ingest and
cleaning's rules rather than all stopping at the header.

The fuzzing runs in seeded batches until SEGMENTS_FUZZ_SECONDS (default 60) have passed, one batch at
least: every batch is reproducible from its seed, and the time spent is bounded however fast the
machine is (a slower one runs fewer batches; the first ones are always the same).
"""

import csv
import functools
import gzip
import io
import os
import tempfile
import time
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tasks.clean import clean_transactions
from tasks.errors import SegmentsError
from tasks.ingest import CANONICAL_COLUMNS, KNOWN_ALIASES, load_transactions
from tests.xlsx_writer import write_xlsx

FUZZ_SECONDS = float(os.environ.get("SEGMENTS_FUZZ_SECONDS", "60"))
EXAMPLES_PER_BATCH = 20
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".xlsx")
LONGEST_MESSAGE = 2_000
# How often, roughly: one in this many times
EDGE_ONE_IN = 8  # a value is an edge case, or missing, rather than a typical one
ODD_ONE_IN = 200  # a cell, a row's length or a column's type is anything at all
DAMAGED_ONE_IN = 4  # a file is cut short or has bytes overwritten, or a workbook is a zip of junk

DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M")
HEADER_NAMES = (*CANONICAL_COLUMNS, *KNOWN_ALIASES, "Notes", "", "InvoiceNo_duplicated_0", "Quantity_1")
printable_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
ODD_CELLS = st.one_of(
    st.sampled_from([
        "NaN", "inf", "1e400", "9223372036854775808", "-9223372036854775809", "9007199254740993", "17850.0",
        "1.785E+04", "2010-02-30", "13/13/2013 13:13", '"', '""', "\x00", "\x1a", "\ufeff", "2,55", "guest",
    ]),
    printable_text, st.integers().map(str), st.floats().map(repr),
)

# Values of each canonical column as in a typical export, and the edge cases cleaning has rules for.
TYPICAL_VALUES = {
    "InvoiceNo": st.integers(536_365, 581_587).map(str),
    "StockCode": st.sampled_from(["85123A", "22633", "84879", "22960", "71053"]),
    "Description": printable_text,
    "Quantity": st.integers(1, 100),
    "InvoiceDate": st.datetimes(datetime(2009, 12, 1), datetime(2011, 12, 9)),
    "UnitPrice": st.integers(1, 10_000).map(lambda cents: cents / 100),
    "CustomerID": st.integers(12_346, 18_287),
    "Country": st.sampled_from(["United Kingdom", "France", "Germany", "EIRE"]),
}
EDGE_VALUES = {
    "InvoiceNo": st.sampled_from(["C536379", "A563185", "c536380", "", " "]),
    "StockCode": st.sampled_from(["POST", "m", "gift_0001_20", "D", "", " "]),
    "Description": st.sampled_from(["", "Café £1 €", "\ufeff", "x" * 1_000]),
    "Quantity": st.sampled_from([0, -1, 3_000_000_000, 2**53 + 1, 2**63 - 1, -(2**63)]),
    "InvoiceDate": st.datetimes(datetime(1900, 3, 1), datetime(2100, 1, 1)),  # .xlsx dates start in March 1900
    "UnitPrice": st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e308]),
    "CustomerID": st.sampled_from([-1, 0, 2**63 - 1]),
    "Country": st.sampled_from(["", " ", "Unspecified"]),
}
NATIVE_TYPES = {"Quantity": pl.Int64, "CustomerID": pl.Int64, "UnitPrice": pl.Float64, "InvoiceDate": pl.Datetime("us")}
# Any type a Parquet column may have, with values for it.
ANY_TYPED_VALUES = (
    (st.integers(0, 2**64 - 1), pl.UInt64), (st.booleans(), pl.Boolean), (st.dates(), pl.Date),
    (st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)), pl.Datetime("us")),
    (st.timedeltas(-timedelta(days=10**5), timedelta(days=10**5)), pl.Duration("us")),
    (st.binary(max_size=6), pl.Binary), (st.lists(st.integers(-5, 5), max_size=3), pl.List(pl.Int64)),
    (st.decimals(-(10**6), 10**6, places=2, allow_nan=False, allow_infinity=False), pl.Decimal(12, 2)),
    (printable_text, pl.Categorical), (st.none(), pl.Null), (ODD_CELLS, pl.String), (st.floats(), pl.Float64),
)
headers = st.one_of(
    st.permutations(CANONICAL_COLUMNS),
    st.permutations([KNOWN_ALIASES.get(name, name) for name in CANONICAL_COLUMNS]),
    st.lists(st.sampled_from(HEADER_NAMES), min_size=1, max_size=10),
)


def one_in(draw: st.DrawFn, times: int) -> bool:
    """True about one in `times` draws."""
    # A middle value, because Hypothesis favours the bounds of a range: "== 0" would come up far more often.
    return draw(st.integers(0, times)) == times // 2


@functools.cache  # building strategies is slow, and a file draws hundreds of values
def column_values(name: str) -> st.SearchStrategy:
    """Values for the column called `name`: typical ones, sometimes an edge case or missing; anything if unknown."""
    column = KNOWN_ALIASES.get(name, name)
    if column not in TYPICAL_VALUES:
        return ODD_CELLS

    @st.composite
    def value(draw: st.DrawFn) -> object:
        if one_in(draw, EDGE_ONE_IN):
            return draw(st.none() | EDGE_VALUES[column])
        return draw(TYPICAL_VALUES[column])

    return value()


def as_text(value: object, date_format: str) -> str:
    """A value as an export writes it: missing as an empty field, dates in the file's format."""
    if value is None:
        return ""
    return value.strftime(date_format) if isinstance(value, datetime) else str(value)


@functools.cache  # as for column_values
def text_cells(name: str, date_format: str) -> st.SearchStrategy[str]:
    """Cells of the column called `name` as text, or (the odd one) anything at all."""

    @st.composite
    def cell(draw: st.DrawFn) -> str:
        return draw(ODD_CELLS) if one_in(draw, ODD_ONE_IN) else as_text(draw(column_values(name)), date_format)

    return cell()


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    """A CSV with a likely header and rows, sometimes ragged, quoted or naively joined, in some encoding."""
    header = draw(headers)
    date_format = draw(st.sampled_from(DATE_FORMATS))
    rows = [list(header)]
    for _ in range(draw(st.integers(0, 12))):
        row = [draw(text_cells(name, date_format)) for name in header]
        rows.append(row[: draw(st.integers(0, len(row)))] if one_in(draw, ODD_ONE_IN) else row)
    separator = draw(st.sampled_from([",", ",", ";", "\t", "|"]))
    if draw(st.booleans()):
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=separator).writerows(rows)
        text = buffer.getvalue()
    else:
        text = "".join(separator.join(row) + draw(st.sampled_from(["\n", "\r\n", "\r"])) for row in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "cp1252", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    return gzip.compress(data) if one_in(draw, 3) else data


@st.composite
def typed_column(draw: st.DrawFn, name: str, length: int, date_format: str, any_type: bool) -> pl.Series:
    """A column called `name` of `length` values, as text or its native type, or (if `any_type`) any type at all."""
    column = KNOWN_ALIASES.get(name, name)
    if any_type and one_in(draw, ODD_ONE_IN):
        values, dtype = draw(st.sampled_from(ANY_TYPED_VALUES))
        return pl.Series(name, draw(st.lists(values, min_size=length, max_size=length)), dtype=dtype)
    if column in NATIVE_TYPES and draw(st.booleans()):
        return pl.Series(name, [draw(column_values(name)) for _ in range(length)], dtype=NATIVE_TYPES[column])
    return pl.Series(name, [draw(text_cells(name, date_format)) for _ in range(length)], dtype=pl.String)


@st.composite
def parquet_bytes(draw: st.DrawFn) -> bytes:
    """A Parquet file of likely column names, with text, native or any-typed columns."""
    length, date_format = draw(st.integers(0, 8)), draw(st.sampled_from(DATE_FORMATS))
    names = dict.fromkeys(draw(headers))  # a Parquet file cannot repeat a name
    buffer = io.BytesIO()
    pl.DataFrame([draw(typed_column(name, length, date_format, any_type=True)) for name in names]).write_parquet(buffer)
    return buffer.getvalue()


@st.composite
def xlsx_bytes(draw: st.DrawFn) -> bytes:
    """A workbook of sheets with text, number and date cells (text may hold characters XML forbids), or junk parts."""
    if one_in(draw, DAMAGED_ONE_IN):
        buffer = io.BytesIO()
        parts = st.sampled_from(["[Content_Types].xml", "xl/workbook.xml", "xl/worksheets/sheet1.xml", "junk"])
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in draw(st.dictionaries(parts, st.binary(max_size=200), max_size=4)).items():
                archive.writestr(name, data)
        return buffer.getvalue()
    length, date_format = draw(st.integers(0, 6)), draw(st.sampled_from(DATE_FORMATS))
    sheet_names = draw(st.lists(st.sampled_from(["Sheet1", "Year 2010", "Empty"]), unique=True, min_size=1, max_size=2))
    sheets = {
        sheet: pl.DataFrame([draw(typed_column(name, length, date_format, any_type=False))
                             for name in dict.fromkeys(draw(headers))])
        .with_columns(pl.col(pl.Int64).cast(pl.Float64))  # Excel has no integers
        for sheet in sheet_names
    }
    with tempfile.TemporaryDirectory() as folder:
        return write_xlsx(Path(folder) / "book.xlsx", sheets).read_bytes()


@st.composite
def damaged(draw: st.DrawFn, content: st.SearchStrategy[bytes]) -> bytes:
    """The content as made or, sometimes, cut short or with a few bytes overwritten."""
    data = bytearray(draw(content))
    if not data or not one_in(draw, DAMAGED_ONE_IN):
        return bytes(data)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def mostly(suffix: str) -> st.SearchStrategy[str]:
    """`suffix` most of the time, any supported suffix otherwise."""
    return st.sampled_from([suffix] * 3 * len(SUFFIXES) + list(SUFFIXES))


input_files = st.one_of(
    st.tuples(st.binary(max_size=512), st.sampled_from(SUFFIXES)),
    st.tuples(damaged(csv_bytes()), mostly(".csv")),
    st.tuples(damaged(parquet_bytes()), mostly(".parquet")),
    st.tuples(damaged(xlsx_bytes()), mostly(".xlsx")),
)


def ingest_and_clean(file: tuple[bytes, str]) -> None:
    """Load the content as a file with the suffix, then clean it: refused in one paragraph, or reconciled exactly."""
    content, suffix = file
    with tempfile.TemporaryDirectory(prefix="segments-fuzz-") as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(content)
        try:
            raw = load_transactions(path).transactions
        except SegmentsError as error:
            message = str(error)
            assert "\n" not in message and len(message) <= LONGEST_MESSAGE, message
            return
    cleaned = clean_transactions(raw)
    assert cleaned.lines.height + cleaned.quarantine.height == raw.height


# The strategies draw only from Hypothesis, but threads that earlier tests leave in this process can
# move the global `random` during a draw (Prefect's clients take their retry and reconnect jitter
# from it), and Hypothesis then blames the strategy, now and then, with a deprecation warning.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_no_input_crashes_ingest_or_cleaning():
    ends = time.monotonic() + FUZZ_SECONDS
    batch = 0
    while batch == 0 or time.monotonic() < ends:  # one batch at least, whatever the time allowed
        # No shrinking: it could take minutes on these slow examples; a failure is reported as found.
        fuzz_batch = seed(batch)(settings(
            max_examples=EXAMPLES_PER_BATCH, deadline=None, database=None, phases=(Phase.generate,),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        )(given(input_files)(ingest_and_clean)))
        fuzz_batch()
        batch += 1
