"""Ingest: read an invoice-line export into the canonical raw-transactions frame.

Formats: Parquet, CSV (UTF-8 or Windows-1252/Latin-1, separated by commas, semicolons or tabs, optionally
gzip-compressed) and Excel .xlsx (every sheet, in workbook order). Locations (file, folder, glob, s3://,
https://) are resolved by `tasks.sources`. Both UCI shapes are understood ("Online Retail":
InvoiceNo/UnitPrice/CustomerID and "Online Retail II": Invoice/Price/Customer ID); other exports map their
names with `column_mapping`. Ingest never drops a row: judging rows is cleaning's job. What it cannot read
faithfully is an InputError naming the file (and sheet), the column and the rows, and what to do.

Every later stage holds the lines in memory, so an input larger than SEGMENTS_MAX_EAGER_BYTES is refused
before it is read (see `MemoryBudget`): the run then fails with the limit it hit instead of being killed.
Parquet files and workbooks are decoded in a child process (see `ChildDecoder`), so a file that crashes
its reader fails with an InputError instead of taking the whole process down. The tables they decode to,
and UTF-8 copies of Windows-1252 CSVs, are written to scratch folders under TMPDIR: a disk full there is a
ConfigurationError naming the folder, not the input.
"""

import codecs
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar

import polars as pl

from schemas import RawTransactions
from tasks.contracts import enforce
from tasks.errors import ConfigurationError, InputError, no_room, room_checked, says_no_room
from tasks.generate import GeneratedData
from tasks.publish import S3Settings
from tasks.sources import CHUNK_BYTES, LocalFile, fetched, shown_location

CANONICAL_COLUMNS = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
)
TEXT_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Country")
NUMBER_COLUMNS = ("Quantity", "UnitPrice", "CustomerID")
_WHOLE_NUMBER = "a whole number within ±9,223,372,036,854,775,807 (Int64)"
# What each column's values must be, as error messages say it.
_READ_AS = {
    **dict.fromkeys(TEXT_COLUMNS, "text"), "Quantity": _WHOLE_NUMBER, "CustomerID": _WHOLE_NUMBER,
    "UnitPrice": "a number with '.' as the decimal point", "InvoiceDate": "a date",
}
KNOWN_ALIASES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
T = TypeVar("T")

# Tried in order; the first that parses every non-null value wins, so "12/13/2010 8:26"
# (US month-first, as in the widely shared CSV copy of Online Retail) is read as 13 December.
# A column must use one format: guessing per value could read "1/2/2011" and "2/1/2011" in one
# column with different day-month orders, which would swap days and months without a word. For
# the same reason a column that both orders read in full, each differently (no day after the
# 12th), takes the order of the input's other dates, and is refused if they do not settle it
# (see settling_day_month).
DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y %H:%M", "%Y-%m-%d",
)
_MONTH_FIRST_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S")
_DAY_MONTH_TWINS = {
    **{month_first: month_first.replace("%m/%d", "%d/%m") for month_first in _MONTH_FIRST_FORMATS},
    **{month_first.replace("%m/%d", "%d/%m"): month_first for month_first in _MONTH_FIRST_FORMATS},
}
# Spreadsheets in many locales export ';'- or tab-separated "CSV"; the header tells which one a file uses.
SEPARATORS = (",", ";", "\t")

MAX_EAGER_BYTES_VARIABLE = "SEGMENTS_MAX_EAGER_BYTES"
DEFAULT_BATCH_ROWS = 1_000_000  # of a streamed input: about 100 MB in memory
_NO_ROWS = "Input {source}: there is a header but no rows; check that the export ran to the end."
# The stages after ingest hold several copies of the lines (about 8 times the raw frame at peak on the UCI
# data), so 2 GiB of input, about 20 million invoice lines of CSV, leaves room on a 24 GB machine.
DEFAULT_MAX_EAGER_BYTES = 2 * 2**30

_EXAMPLES = 5
_LISTED_NAMES = 20
_SHOWN_CHARACTERS = 80  # of a value, column name or reader error quoted in a message
_SAMPLE_ROWS = 10_000
_GZIP_MAGIC = b"\x1f\x8b"
# Excel's "Unicode Text" is UTF-16 and starts with one of these byte-order marks; its every other byte is NUL.
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# C0 control characters other than tab, line feed and carriage return: text never holds them, binary data does.
_CONTROL_CHARACTER = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NOT_CONTROL = bytes(byte for byte in range(256) if not _CONTROL_CHARACTER.match(bytes([byte])))
# A UTF-8 sequence of two to four bytes. Windows-1252 text seldom holds one: it takes an accented letter
# followed by one or two symbols such as '£', '’' or a no-break space, as in French 'é »'.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_UTF8_CANDIDATES = 100  # lines tried per chunk: a Windows-1252 file full of such sequences is read a chunk at a time
# How the readers rename a repeated header name: Polars' CSV reader calls a second "X" "X_duplicated_0",
# fastexcel calls it "X_1". (A sheet with real columns "X" and "X_1" is taken for a repeat too, if X is read.)
_CSV_REPEAT = re.compile(r"(.*)_duplicated_\d+")
_XLSX_REPEAT = re.compile(r"(.*)_\d+")
# Beyond 2**53 a float cannot hold every whole number, so a float that large may already be rounded.
_EXACT_FLOAT_LIMIT = 2**53
# A CSV that is not valid UTF-8 is read as Windows-1252, which is what "Latin-1" exports (such as the
# widely shared Online Retail CSV) really are: it agrees with ISO-8859-1 on every printable character
# and adds '€', curly quotes and dashes in 0x80-0x9F. Its five undefined bytes are read as their
# ISO-8859-1 control characters, so decoding never fails and no byte is lost. (Polars' "utf8-lossy"
# would instead replace every such byte with U+FFFD, silently turning '£' and 'é' into '�'.)
_CP1252_THEN_LATIN1 = "".join(bytes([byte]).decode("cp1252", "ignore") or chr(byte) for byte in range(256))
# What a corrupt or unreadable file raises while it is scanned and collected.
_UNREADABLE = (pl.exceptions.PolarsError, OSError, EOFError, zlib.error)
_UNREADABLE_ADVICE = {
    ".parquet": "the file may be truncated or not Parquet at all; download or export it again",
    ".csv": "check that every quote is closed and no line has more fields than the header",
    ".csv.gz": "the file may be truncated, or a line may have an unclosed quote or more fields than the header",
    ".xlsx": "the file may be truncated, encrypted or not a workbook; open it in Excel and save it as .xlsx again",
}


@dataclass(frozen=True)
class InputFingerprint:
    """What was read: the source as given, its size and content hash."""

    source: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class IngestedTransactions:
    transactions: pl.DataFrame | pl.LazyFrame  # RawTransactions; lazy when staged on disk
    fingerprint: InputFingerprint
    planted_archetypes: pl.DataFrame | None = None  # CustomerID, archetype: known truth of synthetic data

    @property
    def rows(self) -> int:
        return self.transactions.lazy().select(pl.len()).collect().item()


class Table(NamedTuple):
    """One table of an input file as its scanner found it."""

    label: str  # the file, and for a workbook the sheet, as messages name it
    frame: pl.LazyFrame
    header: list[str]  # the frame's column names as the file writes them, repeats included


@dataclass
class MemoryBudget:
    """How much input the in-memory stages may still take; each file claims its size before it is read.

    An input read in batches (`in_batches`, as a streamed one is) needs no room for its lines, but a
    workbook is still read whole: each one alone must fit the limit.
    """

    limit: int
    used: int = 0
    in_batches: bool = False

    def claim(self, source: str, size: int, measure: str, read_whole: bool = False) -> None:
        """Count `size` bytes (`measure` says of what) against the limit; an InputError naming the limit beyond it.

        `read_whole` says the file is held in memory whole even when the input is read in batches.
        """
        if self.in_batches:
            if read_whole and size > self.limit:
                raise InputError(
                    f"Input {source}: {measure} is {_in_units(size)}, over the {_in_units(self.limit)} limit "
                    f"({MAX_EAGER_BYTES_VARIABLE}) that a workbook is held to even when the input is streamed, because "
                    "a workbook is read whole. Save its sheets as CSV, which streams, or raise "
                    f"{MAX_EAGER_BYTES_VARIABLE} on a machine with that much memory to spare."
                )
            return
        if self.used + size > self.limit:
            earlier = f" on top of {_in_units(self.used)} from the files before it" if self.used else ""
            raise InputError(
                f"Input {source}: {measure} is {_in_units(size)}{earlier}, over the {_in_units(self.limit)} limit "
                f"for the in-memory stages ({MAX_EAGER_BYTES_VARIABLE}). Stream it through the stages (--streaming true), "
                f"split it into monthly files for the partitioned flow, or raise {MAX_EAGER_BYTES_VARIABLE} on a "
                "machine with about 8 times as much memory."
            )
        self.used += size


def configured_max_eager_bytes() -> int:
    """The in-memory input limit: SEGMENTS_MAX_EAGER_BYTES (in bytes) if set, else DEFAULT_MAX_EAGER_BYTES."""
    setting = os.environ.get(MAX_EAGER_BYTES_VARIABLE, "").strip()
    if not setting:
        return DEFAULT_MAX_EAGER_BYTES
    if not (setting.isascii() and setting.isdigit() and int(setting) > 0):
        raise ConfigurationError(
            f"{MAX_EAGER_BYTES_VARIABLE}={setting!r} is not a positive whole number of bytes; "
            f"unset it for the default of {DEFAULT_MAX_EAGER_BYTES} (2 GiB)."
        )
    return int(setting)


def from_generated(generated: GeneratedData, seed: int) -> IngestedTransactions:
    """Synthetic demo data as an ingest result, fingerprinted by the hash of its Parquet bytes."""
    buffer = io.BytesIO()
    generated.transactions.write_parquet(buffer)
    data = buffer.getvalue()
    source = f"synthetic demo data (seed {seed}, {generated.transactions.height:,} lines)"
    transactions = enforce(RawTransactions, generated.transactions, source)
    return IngestedTransactions(
        transactions, InputFingerprint(source, len(data), hashlib.sha256(data).hexdigest()), generated.archetypes,
    )


def describe(fingerprint: InputFingerprint, rows: int) -> str:
    """One line naming the input, its size in rows and its hash."""
    return f"{fingerprint.source} ({rows:,} rows, sha256 {fingerprint.sha256[:12]}…)"


def load_transactions(
    source: str | Path, column_mapping: Mapping[str, str] | None = None, max_eager_bytes: int | None = None,
    s3: S3Settings = S3Settings(), day_first: bool | None = None, settle_day_month: bool = True,
) -> IngestedTransactions:
    """Read every file `source` names (a file, folder, glob, s3:// or https:// URL) into one RawTransactions frame.

    `max_eager_bytes` bounds the input read into memory; by default SEGMENTS_MAX_EAGER_BYTES or 2 GiB.
    `s3` says how to reach S3. Text dates that read both day-first and month-first take `day_first`'s
    order; without one, the order the input's other text dates settle (settling_day_month), unless
    `settle_day_month` is False: then they are an AmbiguousDates error, for a caller that settles the
    order over a larger input that `source` is one part of.
    """
    text, mapping = str(source), column_mapping or {}
    limit = configured_max_eager_bytes() if max_eager_bytes is None else max_eager_bytes

    def read(day_first: bool | None) -> list[pl.DataFrame]:
        budget = MemoryBudget(limit)  # one for all the files
        return [frame for file in files for frame in read_file(file, mapping, budget, day_first)]

    with fetched_and_hashed(text, s3) as (files, hashed):
        settling = day_first is None and settle_day_month
        frames = settling_day_month(read, files, mapping, limit) if settling else read(day_first)
        input_fingerprint = hashed.result()
    transactions = pl.concat(frames)
    if transactions.height == 0:
        raise InputError(_NO_ROWS.format(source=input_fingerprint.source))
    return IngestedTransactions(enforce(RawTransactions, transactions, f"Input {input_fingerprint.source}"),
                                input_fingerprint)


def stage_transactions(
    source: str | Path, folder: Path, column_mapping: Mapping[str, str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS, s3: S3Settings = S3Settings(),
) -> IngestedTransactions:
    """load_transactions for input larger than memory: the lines are written to Parquet files under `folder`.

    Each table is read `batch_rows` rows at a time, converted and checked as load_transactions does
    (errors count rows from the table's start), and the result is a lazy scan of the files. A text
    date column's format is the one that fits the first batch; a later batch it does not fit gets an
    error naming its rows. A workbook is read whole even so: one over SEGMENTS_MAX_EAGER_BYTES is refused.
    """
    text, mapping, limit = str(source), column_mapping or {}, configured_max_eager_bytes()

    def stage(day_first: bool | None) -> tuple[Path, int]:
        staged, batches, rows = own_folder(folder, "staged-"), 0, 0
        try:
            for file in files:
                for label, first_row, batch in read_file_batches(file, mapping, MemoryBudget(limit, in_batches=True),
                                                                  batch_rows, day_first):
                    where = f"Input {label}, rows {first_row + 1:,} to {first_row + batch.height:,}"
                    checked = enforce(RawTransactions, batch, where)
                    with room_checked(f"Input {label}", "its decoded lines", folder):
                        checked.write_parquet(staged / f"{batches:06d}.parquet")
                    batches, rows = batches + 1, rows + batch.height
        except BaseException:
            shutil.rmtree(staged)  # half an input, which nothing will read
            raise
        return staged, rows

    with fetched_and_hashed(text, s3) as (files, hashed):
        staged, rows = settling_day_month(stage, files, mapping, limit)
        input_fingerprint = hashed.result()
    if rows == 0:
        raise InputError(_NO_ROWS.format(source=input_fingerprint.source))
    return IngestedTransactions(pl.scan_parquet(staged / "*.parquet"), input_fingerprint)


@contextmanager
def fetched_and_hashed(source: str, s3: S3Settings) -> Iterator[tuple[list[LocalFile], Future[InputFingerprint]]]:
    """The files `source` names (sources.fetched) and their fingerprint, hashed on a thread while the caller reads them.

    hashlib lets go of the GIL, so the hash overlaps the reading: the first pass over a CSV, which is Python's,
    or the child decoding a Parquet file (5M lines of CSV: load_transactions 6.2 -> 5.4 s). Leaving the block
    waits for the hash, so a download is never removed while it is hashed; leaving it by an exception stops
    the hash at its next chunk, so an early error is not held up by a large input.
    """
    abandoned = threading.Event()
    with fetched(source, SUFFIXES, s3) as files, ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
        try:
            yield files, hasher.submit(fingerprint, source, files, abandoned)
        except BaseException:
            abandoned.set()
            raise


def own_folder(parent: Path, prefix: str) -> Path:
    """A new folder in `parent` (created if need be) for one call's files, which files that earlier calls or
    failed attempts left in `parent` can never mix with."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def settling_day_month(
    read: Callable[[bool | None], T], files: Sequence[LocalFile], column_mapping: Mapping[str, str],
    max_eager_bytes: int,
) -> T:
    """read(None); if a table's text dates read both day-first and month-first, read(the order the input settles).

    The order is settled by the input's other text dates, those that read one way round only; when
    none do, or they disagree, the AmbiguousDates error stands.
    """
    try:
        return read(None)
    except AmbiguousDates:
        day_first = settled_day_first(_files_day_month_orders(files, column_mapping, max_eager_bytes))
        if day_first is None:
            raise
        return read(day_first)


def settled_day_first(orders: Set[bool]) -> bool | None:
    """The order an input's day_month_orders settle: True if its text dates that read one way round only
    are all day-first, False if all month-first; None if no date settles it, or they disagree."""
    return next(iter(orders)) if len(orders) == 1 else None


def day_month_orders(
    source: str | Path, column_mapping: Mapping[str, str] | None = None, s3: S3Settings = S3Settings(),
) -> frozenset[bool]:
    """The orders in which the text dates of the files `source` names read one way round only: True for
    day-first, False for month-first. Those of an input in parts are the union of the parts' orders.

    A workbook among them must fit SEGMENTS_MAX_EAGER_BYTES: it is read whole.
    """
    with fetched(str(source), SUFFIXES, s3) as files:
        return _files_day_month_orders(files, column_mapping or {}, configured_max_eager_bytes())


def _files_day_month_orders(
    files: Sequence[LocalFile], column_mapping: Mapping[str, str], max_eager_bytes: int,
) -> frozenset[bool]:
    """day_month_orders of files already fetched. The dates are read in batches; a workbook, read whole, must fit
    `max_eager_bytes`."""
    orders = set()
    for file in files:
        suffix = _format_suffix(file)
        with tempfile.TemporaryDirectory(prefix="segments-ingest-") as scratch:
            try:
                for table in _SCANNERS[suffix](file, Path(scratch), MemoryBudget(max_eager_bytes, in_batches=True),
                                               column_mapping):
                    dates = rename_to_canonical(table, column_mapping).select("InvoiceDate")
                    for batch in dates.collect_batches(chunk_size=DEFAULT_BATCH_ROWS):
                        orders |= _day_month_orders(batch["InvoiceDate"])
            except _UNREADABLE as error:
                raise _unreadable(file, suffix, _first_line(error)) from None
    return frozenset(orders)


def _day_month_orders(values: pl.Series) -> set[bool]:
    """{True} if the text dates all read day-first but not month-first, {False} the other way round; else empty."""
    if values.dtype != pl.String:
        return set()
    text = values.str.strip_chars().replace("", None)
    fitting = {date_format.startswith("%d") for date_format in _DAY_MONTH_TWINS
               if _parsed_dates(text, date_format).count() == text.count()}
    return fitting if len(fitting) == 1 else set()


def read_file(
    file: LocalFile, column_mapping: Mapping[str, str], budget: MemoryBudget, day_first: bool | None = None,
) -> list[pl.DataFrame]:
    """Every table in `file` (a workbook has one per sheet) with canonical names and types."""
    return [table for _, _, table in read_file_batches(file, column_mapping, budget, None, day_first)]


def read_file_batches(
    file: LocalFile, column_mapping: Mapping[str, str], budget: MemoryBudget, batch_rows: int | None,
    day_first: bool | None = None,
) -> Iterator[tuple[str, int, pl.DataFrame]]:
    """The file's tables with canonical names and types, `batch_rows` rows at a time (None: whole tables).

    Yields each batch with its table's label and the row (from 0) of the table it starts at. Text
    dates that read both day-first and month-first take `day_first`'s order; without one, they are an
    AmbiguousDates error.
    """
    if file.path.stat().st_size == 0:
        raise InputError(f"Input {file.name}: the file is empty (0 bytes); check that the export ran to the end.")
    suffix = _format_suffix(file)
    with tempfile.TemporaryDirectory(prefix="segments-ingest-") as scratch:
        try:
            for table in _SCANNERS[suffix](file, Path(scratch), budget, column_mapping):
                # Renamed and selected before collecting, so Parquet and CSV read only the canonical columns.
                canonical = rename_to_canonical(table, column_mapping)
                batches = [canonical.collect()] if batch_rows is None else canonical.collect_batches(chunk_size=batch_rows)
                first_row, later_date_format = 0, None
                for batch in batches:
                    yield table.label, first_row, canonicalize_types(
                        batch, table.label, later_date_format, None if batch_rows is None else first_row, day_first)
                    if batch_rows is not None and later_date_format is None and batch["InvoiceDate"].count():
                        # The first batch with a date decides the format of the rest.
                        later_date_format = best_date_format(batch["InvoiceDate"], table.label, day_first)
                    first_row += batch.height
        except _UNREADABLE as error:
            raise _unreadable(file, suffix, _first_line(error)) from None


def _unreadable(file: LocalFile, suffix: str, reason: str) -> InputError | ConfigurationError:
    """The error for a file its reader failed on, for `reason` (the reader's): an InputError with advice for the
    format, unless what failed was writing the decoded tables to the scratch folders under TMPDIR."""
    if says_no_room(reason):
        return no_room(f"Input {file.name}", "its decoded lines", tempfile.gettempdir(), _printable(reason))
    return InputError(
        f"Input {file.name}: cannot be read as {suffix} ({_printable(reason)}; {_UNREADABLE_ADVICE[suffix]})."
    )


def _format_suffix(file: LocalFile) -> str:
    """The supported suffix the file's name ends with; an InputError for any other."""
    name = file.path.name.lower()
    for suffix in _SCANNERS:
        if name.endswith(suffix):
            return suffix
    found = "".join(file.path.suffixes[-2:]) or "(no extension)"
    raise InputError(f"Input {file.name}: unsupported format {found}; use {', '.join(_SCANNERS)}.")


def _first_line(error: Exception) -> str:
    """The first line of an error's message; Polars and calamine append query plans and context below it."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _printable(text: str) -> str:
    """`text` for a one-paragraph message: control characters escaped, cut after _SHOWN_CHARACTERS."""
    shown = repr(text[:_SHOWN_CHARACTERS])[1:-1]
    return shown + "…" if len(text) > _SHOWN_CHARACTERS else shown


def _in_units(size: int) -> str:
    """A byte count for people: '512 bytes', '3.4 MiB', '2.0 GiB'."""
    exponent = min(max(size.bit_length() - 1, 0) // 10, 4)
    return f"{size:,} bytes" if exponent == 0 else f"{size / 1024**exponent:,.1f} {'KMGT'[exponent - 1]}iB"


# --- Parquet -----------------------------------------------------------------------------


def _scan_parquet(
    file: LocalFile, scratch: Path, budget: MemoryBudget, column_mapping: Mapping[str, str],
) -> list[Table]:
    """The Parquet file as one lazy table, decoded by a child process once the estimated size of the columns read
    (the canonical ones, found with `column_mapping`) fits the budget: the in-memory stages never hold the others."""
    sizes = _decoder.column_sizes(file)
    header = list(sizes)
    read = [header[position] for position in canonical_positions(file.name, header, column_mapping)]
    measure = f"the estimated size in memory of the {len(read)} columns read"
    budget.claim(file.name, sum(sizes[name] for name in read), measure)
    _decoder.decode(file, ".parquet", scratch, columns=read)  # the others would only cost scratch disk and time
    table = pl.scan_ipc(scratch / "0.arrow")
    return [Table(file.name, table, table.collect_schema().names())]


# --- CSV ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextFacts:
    """What one pass over a CSV's (decompressed) bytes finds out."""

    size_bytes: int
    first_line: bytes  # or as much of it as the first chunk holds
    control_lines: list[int]  # the first few line numbers (from 1) holding control characters
    non_utf8_line: int | None  # the first line (from 1) that is not valid UTF-8
    utf8_line: int | None  # the first line with a valid UTF-8 sequence of two bytes or more, such as 'é'

    @property
    def is_utf8(self) -> bool:
        return self.non_utf8_line is None


def _scan_csv(
    file: LocalFile, scratch: Path, budget: MemoryBudget, column_mapping: Mapping[str, str],
) -> list[Table]:
    """The CSV as one lazy table, every column as text (types are decided later), decoded to UTF-8 if needed."""
    facts = _inspect_text(file.path)
    if facts.first_line.startswith(_UTF16_BOMS):
        raise InputError(
            f"Input {file.name}: the file is UTF-16 text (such as Excel's \"Unicode Text\"), which is not read; "
            "open it in Excel and save it as \"CSV UTF-8 (Comma delimited)\"."
        )
    if facts.control_lines:
        raise InputError(
            f"Input {file.name}: control characters such as NUL bytes, which text never has, on line(s) "
            f"{', '.join(map(str, facts.control_lines))}: part of the file is binary (a damaged copy, or another file "
            "pasted in). Remove those lines, or export or download the file again."
        )
    if facts.non_utf8_line and facts.utf8_line:
        # Read as Windows-1252, as a file that is not UTF-8 is, every UTF-8 'é' would become 'Ã©'.
        raise InputError(
            f"Input {file.name}: the text is UTF-8 (line {facts.utf8_line:,} has a UTF-8 accented letter or symbol) "
            f"but line {facts.non_utf8_line:,} is not: the file mixes two encodings, so neither reads all of it. "
            "Correct that line, or export the whole file again as CSV UTF-8."
        )
    budget.claim(file.name, facts.size_bytes, "its size as text")
    path = file.path if facts.is_utf8 else _decode_cp1252(file.path, scratch / "decoded.csv")
    table = pl.scan_csv(path, infer_schema=False, separator=_separator(facts.first_line))
    header = _as_written(table.collect_schema().names(), _CSV_REPEAT)
    if len(header) == 1:
        raise InputError(
            f"Input {file.name}: the header is a single field ({_printable(header[0])}), but an export needs "
            f"{len(CANONICAL_COLUMNS)} columns separated by commas, semicolons or tabs. Save the file as CSV with "
            "one of those separators."
        )
    return [Table(file.name, table, header)]


def _inspect_text(path: Path) -> TextFacts:
    """Size, encoding, first line and lines with control characters of the (decompressed) file, in one pass."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size, first_chunk, lines_before, control_lines = 0, None, 0, []
    non_utf8_line = utf8_line = None
    with _open_decompressed(path) as stream:
        for chunk in _chunks(stream):
            first_chunk = chunk if first_chunk is None else first_chunk
            if non_utf8_line is None and (offset := _first_non_utf8(decoder, chunk)) is not None:
                non_utf8_line = lines_before + chunk.count(b"\n", 0, offset) + 1
            if utf8_line is None and (offset := _first_utf8_line(chunk)) is not None:
                utf8_line = lines_before + chunk.count(b"\n", 0, offset) + 1
            for line in _control_lines(chunk, lines_before + 1, _EXAMPLES - len(control_lines)):
                if line not in control_lines:  # a line spanning two chunks may be found in both
                    control_lines.append(line)
            size += len(chunk)
            lines_before += chunk.count(b"\n")
    if non_utf8_line is None and _first_non_utf8(decoder, b"", final=True) is not None:
        non_utf8_line = lines_before + 1  # the file ends inside a character
    return TextFacts(size, (first_chunk or b"").split(b"\n", 1)[0], control_lines[:_EXAMPLES], non_utf8_line, utf8_line)


def _first_utf8_line(chunk: bytes) -> int | None:
    """Where in `chunk` the first whole line that is UTF-8 with a sequence of two bytes or more starts, if any.

    Whole lines only: in Windows-1252 text, 'é' + no-break space + '»' is such a sequence too. Chunks
    without one are passed over at C speed: decoded with invalid bytes escaped one character each, a
    chunk gets shorter only by such sequences.
    """
    if chunk.isascii() or len(chunk.decode("utf-8", "surrogateescape")) == len(chunk):
        return None
    for match in itertools.islice(_UTF8_MULTIBYTE.finditer(chunk), _UTF8_CANDIDATES):
        start, end = chunk.rfind(b"\n", 0, match.start()) + 1, chunk.find(b"\n", match.end())
        try:
            chunk[start:None if end < 0 else end].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return start
    return None


def _first_non_utf8(decoder: codecs.IncrementalDecoder, chunk: bytes, final: bool = False) -> int | None:
    """Where in `chunk` valid UTF-8, continued from what `decoder` has seen, ends; None if it does not."""
    held_back = len(decoder.getstate()[0])  # the previous chunk's last bytes, if they began a character
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as error:
        return max(error.start - held_back, 0)
    return None


def _control_lines(chunk: bytes, first_line: int, wanted: int) -> list[int]:
    """Up to `wanted` numbers of lines in `chunk`, which starts on line `first_line`, that hold control characters."""
    if not chunk.translate(None, _NOT_CONTROL):  # far faster than searching text without any
        return []
    found, line, position = [], first_line, 0
    while len(found) < wanted and (match := _CONTROL_CHARACTER.search(chunk, position)):
        line += chunk.count(b"\n", position, match.start())
        found.append(line)
        position = chunk.find(b"\n", match.start())  # the rest of this line needs no more searching
        if position < 0:
            break
    return found


def _separator(first_line: bytes) -> str:
    """The field separator the header uses most: ';' or tab if it has more of them than commas, else ','."""
    return max(SEPARATORS, key=lambda separator: first_line.count(separator.encode()))


def _open_decompressed(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (recognised by its magic number, not its name)."""
    with path.open("rb") as probe:
        compressed = probe.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream in chunks, so large files never sit in memory whole."""
    return iter(lambda: stream.read(CHUNK_BYTES), b"")


def _decode_cp1252(path: Path, target: Path) -> Path:
    """Write a UTF-8 copy of the Windows-1252 (or Latin-1) file to `target`; one byte is one character."""
    with _open_decompressed(path) as stream, target.open("wb") as copy:
        for chunk in _chunks(stream):
            copy.write(codecs.charmap_decode(chunk, "strict", _CP1252_THEN_LATIN1)[0].encode("utf-8"))
    return target


# --- Excel -------------------------------------------------------------------------------


def _scan_workbook(
    file: LocalFile, scratch: Path, budget: MemoryBudget, column_mapping: Mapping[str, str],
) -> list[Table]:
    """Every sheet with cells, in workbook order, labelled with its name for error messages.

    Column types are inferred from every row, not a sample, so a column that mixes numbers and text,
    like the UCI workbook's InvoiceNo (536365 and "C536379"), becomes text instead of losing its
    text cells to null. fastexcel is used directly because it keeps empty rows, so row N in an error
    is the sheet's row N + 1 (below the header) as in a CSV, and tells a workbook without sheets from
    one with empty sheets.
    """
    _check_workbook_archive(file, budget)
    sheet_names = _decoder.decode(file, ".xlsx", scratch)
    if not sheet_names:
        raise InputError(f"Input {file.name}: the workbook has no sheets. Check that this is the right file.")
    sheets = {name: pl.read_ipc(scratch / f"{index}.arrow") for index, name in enumerate(sheet_names)}
    tables = [
        Table(f"{file.name}, sheet {name!r}", sheet.lazy(), _as_written(sheet.columns, _XLSX_REPEAT))
        for name, sheet in sheets.items() if sheet.width
    ]
    if not tables:
        raise InputError(
            f"Input {file.name}: every sheet of the workbook is empty ({', '.join(map(repr, sheets))}). "
            "Check that this is the right file."
        )
    return tables


def _check_workbook_archive(file: LocalFile, budget: MemoryBudget) -> None:
    """Claim the workbook's uncompressed size before anything is decompressed, then check every part's checksum.

    An .xlsx is a zip archive of XML parts, which the Excel reader holds in memory uncompressed; a "zip
    bomb" declares or hides a huge uncompressed size. The declared sizes are claimed from the budget
    first. They could lie, so every part is then decompressed once, in chunks, and checked against its
    CRC: Python's zipfile stops reading a part at its declared size, so this never reads beyond the budget.
    """
    try:
        with zipfile.ZipFile(file.path) as archive:
            parts = archive.infolist()
            budget.claim(file.name, sum(part.file_size for part in parts), "the uncompressed size of the workbook",
                         read_whole=True)
            corrupt_part = archive.testzip()
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:  # also unknown compression, encryption
        raise InputError(
            f"Input {file.name}: cannot be read as .xlsx (it is not a readable Zip archive, as every workbook is: "
            f"{_printable(str(error))}; {_UNREADABLE_ADVICE['.xlsx']})."
        ) from None
    if corrupt_part is not None:
        raise InputError(
            f"Input {file.name}: cannot be read as .xlsx (part {_printable(corrupt_part)} does not match its "
            f"checksum; {_UNREADABLE_ADVICE['.xlsx']})."
        )


# --- decoding in a child process ----------------------------------------------------------

# The child process that reads Parquet files and workbooks (see ChildDecoder). It imports only the
# readers and tasks.memory, so it starts quickly. Each request is one JSON line, a function's name and
# its arguments; each answer one JSON line with the function's result or the reason it failed, and the
# child's own peak memory so far (not ru_maxrss, which would include the flow run's: see tasks/memory.py).
_CHILD_SCRIPT = """
import json, sys
import fastexcel, polars
from tasks.memory import resident_memory

def column_sizes(source, sample_rows):
    table = polars.scan_parquet(source)
    sample = table.head(sample_rows).collect()
    rows = table.select(polars.len()).collect().item()
    return {column.name: rows * column.estimated_size() // max(sample.height, 1) for column in sample.get_columns()}

def decode(source, suffix, folder, columns):
    if suffix == ".parquet":
        polars.scan_parquet(source).select(columns).sink_ipc(f"{folder}/0.arrow", compression="lz4")
        return [None]
    workbook = fastexcel.read_excel(source)
    for index, name in enumerate(workbook.sheet_names):
        sheet = workbook.load_sheet(name, schema_sample_rows=None).to_polars()
        sheet.write_ipc(f"{folder}/{index}.arrow", compression="lz4")
    return workbook.sheet_names

answers, sys.stdout = sys.stdout, sys.stderr  # nothing a library prints can mix with the answers
for request in sys.stdin:
    function, *arguments = json.loads(request)
    try:
        answer = {"result": {"column_sizes": column_sizes, "decode": decode}[function](*arguments)}
    except BaseException as error:  # a Rust panic is a BaseException, and its text is the reader's internals
        panicked = type(error).__name__ == "PanicException"
        reason = "the reader failed on its contents" if panicked else str(error).strip() or type(error).__name__
        answer = {"error": reason.splitlines()[0]}
    answer["peak_mib"] = getattr(resident_memory(), "peak_mib", 0)  # unknown without /proc: the child is kept
    print(json.dumps(answer), file=answers, flush=True)
"""
# A child that has held more than this lets go after its answer, so its memory goes back to the system.
_CHILD_PEAK_MIB = 256


class ChildDecoder:
    """Reads Parquet files and workbooks in a child process, kept for the next file, into Arrow IPC files.

    The Parquet and Excel readers trust the lengths and cell positions a file declares: one damaged byte
    in a Parquet page header, or two cells at A1 and XFD1048576, makes them allocate terabytes and abort
    the whole process, which no except clause can catch. In a child that ends only the child: the file
    gets an InputError and the next file a new child.
    """

    def __init__(self) -> None:
        self._child: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one request at a time, whichever thread ingests

    def column_sizes(self, file: LocalFile) -> dict[str, int]:
        """Bytes each column of the Parquet file takes in memory, in the file's order: its row count times the
        size of its first rows."""
        return self._ask(file, ".parquet", "column_sizes", _SAMPLE_ROWS)

    def decode(
        self, file: LocalFile, suffix: str, folder: Path, columns: Sequence[str] | None = None,
    ) -> list[str | None]:
        """Write the file's tables to <folder>/<index>.arrow, of a Parquet file only its `columns`; the names of its
        sheets ([None] for Parquet)."""
        return self._ask(file, suffix, "decode", suffix, str(folder), None if columns is None else list(columns))

    def _ask(self, file: LocalFile, suffix: str, function: str, *arguments: object) -> object:
        """What the child's `function` returns for the file's path and `arguments`; an InputError if it fails."""
        with self._lock:
            child = self._running_child()
            # Absolute: the kept child stays in the working folder it started in, where a relative path names
            # another file.
            child.stdin.write(json.dumps([function, str(file.path.absolute()), *arguments]) + "\n")
            child.stdin.flush()
            answer = child.stdout.readline()
            if not answer:
                raise _unreadable(file, suffix, f"the reader crashed on its contents with {_ending(_reaped(self._let_go()))}")
            outcome = json.loads(answer)
            if outcome["peak_mib"] > _CHILD_PEAK_MIB:
                # It frees that memory as it exits, within a fraction of a second: nothing here waits for that.
                threading.Thread(target=_reaped, args=(self._let_go(),), daemon=True).start()
        if "error" in outcome:
            raise _unreadable(file, suffix, outcome["error"])
        return outcome["result"]

    def _running_child(self) -> subprocess.Popen:
        """The child process, started if there is none or it has died."""
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD_SCRIPT], text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,  # a crash's backtrace
            )
        return self._child

    def _let_go(self) -> subprocess.Popen:
        """The child, no longer this decoder's, with its input closed: it exits once it has read everything."""
        child, self._child = self._child, None
        child.stdin.close()
        return child


def _reaped(child: subprocess.Popen) -> int:
    """How the child ended (its return code), once it has; its output pipe closed."""
    returncode = child.wait()
    child.stdout.close()
    return returncode


def _ending(returncode: int) -> str:
    """How a child process ended: the signal that killed it, or its exit code."""
    return signal.Signals(-returncode).name if returncode < 0 else f"exit code {returncode}"


_decoder = ChildDecoder()


# Each takes the column mapping too: what the in-memory stages will hold of a file can depend on it.
_SCANNERS: dict[str, Callable[[LocalFile, Path, MemoryBudget, Mapping[str, str]], list[Table]]] = {
    ".parquet": _scan_parquet, ".csv": _scan_csv, ".csv.gz": _scan_csv, ".xlsx": _scan_workbook,
}
SUFFIXES = tuple(_SCANNERS)  # the file names ingest reads: what a folder, glob or S3 prefix stands for


# --- names and types ---------------------------------------------------------------------


def _as_written(names: list[str], repeat: re.Pattern[str]) -> list[str]:
    """The header as the file writes it: a reader's renamed repeat of an earlier name gets that name back."""
    written = []
    for name in names:
        renamed = repeat.fullmatch(name)
        written.append(renamed[1] if renamed and renamed[1] in written else name)
    return written


def rename_to_canonical(table: Table, column_mapping: Mapping[str, str]) -> pl.LazyFrame:
    """The canonical columns, found by their own, known or user-given names; extra columns are left out."""
    names = table.frame.collect_schema().names()
    positions = canonical_positions(table.label, table.header, column_mapping)
    return table.frame.select(pl.col(names[at]).alias(column) for column, at in zip(CANONICAL_COLUMNS, positions))


def canonical_positions(label: str, header: Sequence[str], column_mapping: Mapping[str, str]) -> list[int]:
    """Where each canonical column is in `header`, by its own, known or user-given name; an InputError
    naming the table (`label`) if one is missing or more than one column would be read as it."""
    names = {**KNOWN_ALIASES, **column_mapping}
    read_as = [names.get(name, name) for name in header]
    repeated = {
        column: [name for name, target in zip(header, read_as) if target == column]
        for column in CANONICAL_COLUMNS if read_as.count(column) > 1
    }
    if repeated:
        described = "; ".join(f"{column} ({', '.join(map(repr, sources))})" for column, sources in repeated.items())
        raise InputError(
            f"Input {label}: duplicated column(s) {described}: it is unclear which one to read. "
            "Remove or rename the extra column(s) so that each required column appears once."
        )
    missing = [column for column in CANONICAL_COLUMNS if column not in read_as]
    if missing:
        raise InputError(
            f"Input {label}: required column(s) {', '.join(missing)} missing; found {_listing(header)}. "
            "Map other names with a column mapping, e.g. --column-map 'Customer=CustomerID'."
        )
    return [read_as.index(column) for column in CANONICAL_COLUMNS]


def _listing(names: Sequence[str]) -> str:
    """Column names for a message: each printable and short, and at most _LISTED_NAMES of them."""
    listed = ", ".join(_printable(name) for name in names[:_LISTED_NAMES])
    return listed + (f" and {len(names) - _LISTED_NAMES:,} more" if len(names) > _LISTED_NAMES else "")


def canonicalize_types(
    table: pl.DataFrame, source: str, date_format: str | None = None, first_row: int | None = None,
    day_first: bool | None = None,
) -> pl.DataFrame:
    """Cast every column to its canonical type, naming the rows whose values cannot be converted.

    Text dates are read in `date_format` (one the column's first rows have), by default the column's best_date_format. When the
    table is a batch of a larger one, `first_row` is the larger table's row it starts at (from 0).
    """
    misfits = [
        f"column {column} holds {dtype} values, which cannot be read as {_READ_AS[column]}"
        for column, dtype in table.schema.items() if not _type_fits(column, dtype)
    ]
    if misfits:
        raise InputError(f"Input {source}: {'; '.join(misfits)}. Export those columns as plain values or as text.")
    # Writers that quote every field write an empty number or date as "", and some pad cells with
    # blanks: such a cell is missing, as an unquoted empty field is, not a value that cannot be read.
    table = table.with_columns(
        pl.col(column).str.strip_chars().replace("", None)
        for column in (*NUMBER_COLUMNS, "InvoiceDate") if table.schema[column] == pl.String
    )
    dates, dates_read_as = _as_datetime(table["InvoiceDate"], date_format, source, day_first)
    converted = {
        # One select, so the text columns are stripped in parallel.
        **table.select(_as_text(column, table.schema[column]) for column in TEXT_COLUMNS).to_dict(),
        "Quantity": _as_integer(table["Quantity"]), "UnitPrice": table["UnitPrice"].cast(pl.Float64, strict=False),
        "CustomerID": _as_integer(table["CustomerID"]), "InvoiceDate": dates,
    }
    read_as = {**_READ_AS, "InvoiceDate": dates_read_as}
    for column in (*NUMBER_COLUMNS, "InvoiceDate"):  # text always converts, its types being checked above
        _check_nothing_lost(table[column], converted[column], source, read_as[column], first_row)
    return pl.DataFrame({column: converted[column] for column in CANONICAL_COLUMNS})


def _type_fits(column: str, dtype: pl.DataType) -> bool:
    """Whether a file's column of type `dtype` can hold the canonical column's values faithfully.

    Text columns take numbers, as Excel stores invoice numbers and stock codes; a date in a number
    column, a number in the date column or a list anywhere is refused rather than reinterpreted.
    """
    if dtype in (pl.String, pl.Null):
        return True
    if column in TEXT_COLUMNS:
        return dtype.is_numeric() or dtype in (pl.Date, pl.Datetime, pl.Boolean, pl.Categorical, pl.Enum)
    if column in NUMBER_COLUMNS:
        return dtype.is_numeric()
    return dtype in (pl.Date, pl.Datetime)


def _as_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """Text without surrounding blanks; whole numbers without ".0", as Excel stores numeric invoice numbers."""
    values = pl.col(column)
    if dtype.is_float():
        values = _exact_whole_number(values).cast(pl.String).fill_null(values.cast(pl.String))
    return values.cast(pl.String).str.strip_chars()


def _as_integer(values: pl.Series) -> pl.Series:
    """Whole numbers as Int64 without rounding: text digit by digit ("17850", "17850.0"), floats only where exact.

    Anything fractional, non-numeric or beyond Int64 becomes null, which `_check_nothing_lost` reports.
    """
    if values.dtype.is_integer():
        return values.cast(pl.Int64, strict=False)
    if values.dtype.is_float():
        return pl.select(_exact_whole_number(pl.lit(values))).to_series()
    text = values.cast(pl.String).str.strip_chars()
    integers = text.cast(pl.Int64, strict=False)
    if integers.null_count() > text.null_count():  # e.g. "17850.0", as CSV exports of float columns write them
        integers = integers.fill_null(text.str.replace(r"\.0*$", "").cast(pl.Int64, strict=False))
    if integers.null_count() > text.null_count():  # e.g. "1.785E+04"
        integers = integers.fill_null(pl.select(_exact_whole_number(pl.lit(text).cast(pl.Float64, strict=False))).to_series())
    return integers


def _exact_whole_number(numbers: pl.Expr) -> pl.Expr:
    """Floats as Int64 where they hold a whole number exactly (at most 2**53 in size); null elsewhere."""
    exact = (numbers == numbers.round()) & (numbers.abs() <= _EXACT_FLOAT_LIMIT)
    return pl.when(exact).then(numbers).cast(pl.Int64)


def best_date_format(values: pl.Series, source: str, day_first: bool | None = None) -> str | None:
    """The first of DATE_FORMATS that fits every value or, if none does, the one that fits most; None for dates.

    Picking the best rather than giving up means the error raised by `_check_nothing_lost` lists the
    truly odd values rather than every row. Values that read both day-first and month-first, to
    different dates, take `day_first`'s order, or without one are an AmbiguousDates error naming `source`.
    """
    if values.dtype in (pl.Datetime, pl.Date):
        return None
    return _best_parse(values, source, day_first)[0]


def _best_parse(text: pl.Series, source: str, day_first: bool | None) -> tuple[str, pl.Series]:
    """best_date_format of the text, and the text parsed with it."""
    parsed = {}
    for date_format in DATE_FORMATS:
        parsed[date_format] = _parsed_dates(text, date_format)
        if parsed[date_format].count() == text.count():
            break
    best = max(parsed, key=lambda date_format: parsed[date_format].count())
    twin = _DAY_MONTH_TWINS.get(best)
    if twin and parsed[best].count() == text.count():
        twin_parsed = _parsed_dates(text, twin)
        if twin_parsed.count() == text.count() and not twin_parsed.equals(parsed[best]):
            if day_first is None:
                raise AmbiguousDates(source, text.name, text.filter(twin_parsed != parsed[best])[0])
            if day_first == twin.startswith("%d"):
                return twin, twin_parsed
    return best, parsed[best]


class AmbiguousDates(InputError):
    """Every text date of a column reads both day-first and month-first, to different dates."""

    def __init__(self, source: str, column: str, example: str) -> None:
        super().__init__(
            f"Input {source}: every date in column {column} reads both month-first and day-first (no day is after "
            f"the 12th), so day and month could be swapped, e.g. {_quoted(example)}, and the input's other dates "
            "do not settle the order (none reads one way round only, or they disagree). Export the dates as "
            "YYYY-MM-DD, or as real dates (Parquet or Excel date cells)."
        )
        self.source, self.column, self.example = source, column, example

    def __reduce__(self) -> tuple:
        # Pickled by its parts, not its message, so that it can cross from a Dask worker to the flow.
        return type(self), (self.source, self.column, self.example)


def _as_datetime(
    values: pl.Series, date_format: str | None, source: str, day_first: bool | None,
) -> tuple[pl.Series, str]:
    """Datetimes and dates as they are, text parsed with one format; and what the values must be, for errors.

    Datetimes with a time zone keep their clock time in that zone: invoice times are local.
    """
    if values.dtype in (pl.Datetime, pl.Date):
        if getattr(values.dtype, "time_zone", None):
            values = values.dt.replace_time_zone(None)
        return values.cast(pl.Datetime("us")), _READ_AS[values.name]
    if date_format:
        parsed = _parsed_dates(values, date_format)
        return parsed, f"a date in the format {date_format} that the column's first rows have (one format per column)"
    chosen, parsed = _best_parse(values, source, day_first)
    if fitting := parsed.count():
        return parsed, f"a date in the format {chosen} that the column's other {fitting:,} value(s) have (one format per column)"
    return parsed, f"a date in one of the formats {', '.join(DATE_FORMATS)}"


def _parsed_dates(text: pl.Series, date_format: str) -> pl.Series:
    """Text values parsed as datetimes in `date_format`; null where it does not fit."""
    return text.cast(pl.String).str.strip_chars().str.to_datetime(date_format, strict=False, time_unit="us")


def _check_nothing_lost(original: pl.Series, converted: pl.Series, source: str, read_as: str,
                        first_row: int | None) -> None:
    """An InputError naming the values (and rows, counted from 1) that converting turned into null, if any.

    With `first_row`, the series are a batch starting at that row (from 0) of the table.
    """
    lost = original.is_not_null() & converted.is_null()
    if lost.any():
        rows = lost.arg_true() + (first_row or 0)
        examples = ", ".join(f"{_quoted(original[row - (first_row or 0)])} (row {row + 1:,})" for row in rows[:_EXAMPLES])
        within = "" if first_row is None else f" in rows {first_row + 1:,} to {first_row + len(original):,}"
        raise InputError(
            f"Input {source}: column {original.name} has {len(rows):,} value(s){within} that cannot be read as "
            f"{read_as}, e.g. {examples}. Correct or remove those rows, or map another column onto {original.name}."
        )


def _quoted(value: object) -> str:
    """A value for a message: text in quotes, printable and cut short if long; anything else as Python shows it."""
    return f"'{_printable(value)}'" if isinstance(value, str) else repr(value)


def fingerprint(source: str, files: Sequence[LocalFile], abandoned: threading.Event) -> InputFingerprint:
    """Total size and sha256 of the input: of its one file, or of the `sha256sum`-style listing of its files.

    Stops with a CancelledError once `abandoned` is set.
    """
    return merged_fingerprint(
        source, [InputFingerprint(file.name, *_size_and_sha256(file.path, abandoned)) for file in files])


def merged_fingerprint(source: str, files: Sequence[InputFingerprint]) -> InputFingerprint:
    """The fingerprint of `source` from those of its files: one file's own, or the sha256 of the files' listing.

    The listing names each file relative to the deepest folder holding them all, so that, like one
    file's sha256, it depends on the files alone: 'data/', './data' and /home/me/data give the same.
    The source is kept as its shown_location: a presigned URL's signature goes no further.
    """
    if len(files) == 1:
        return replace(files[0], source=shown_location(source))
    parts = [Path(file.source).parts for file in files]
    shared = 0
    while all(len(names) > shared + 1 and names[shared] == parts[0][shared] for names in parts):
        shared += 1
    listing = "".join(f"{file.sha256}  {'/'.join(names[shared:])}\n" for file, names in zip(files, parts))
    return InputFingerprint(shown_location(source), sum(file.size_bytes for file in files),
                            hashlib.sha256(listing.encode()).hexdigest())


def _size_and_sha256(path: Path, abandoned: threading.Event) -> tuple[int, str]:
    """Size and sha256 of a file, read in chunks so large inputs do not sit in memory; stops with a CancelledError
    once `abandoned` is set."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in _chunks(stream):
            if abandoned.is_set():
                raise CancelledError(f"hashing {path} was abandoned")
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()
