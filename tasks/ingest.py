"""Ingest: read an invoice-line export into the canonical raw-transactions frame.

Formats: Parquet, CSV (UTF-8 or Windows-1252/Latin-1, optionally gzip-compressed) and Excel .xlsx
(every sheet, in workbook order). Locations (file, folder, glob, s3://, https://) are resolved by
`tasks.sources`. Both UCI shapes are understood ("Online Retail": InvoiceNo/UnitPrice/CustomerID
and "Online Retail II": Invoice/Price/Customer ID); other exports map their names with
`column_mapping`. Ingest never drops a row: judging rows is cleaning's job.
"""

import codecs
import gzip
import hashlib
import io
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fastexcel
import polars as pl

from schemas import RawTransactions
from tasks.contracts import enforce
from tasks.errors import InputError
from tasks.generate import GeneratedData
from tasks.sources import CHUNK_BYTES, LocalFile, fetched

CANONICAL_COLUMNS = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
)
TEXT_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Country")
KNOWN_ALIASES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}

# Tried in order; the first that parses every non-null value wins, so "12/1/2010 8:26"
# (US month-first, as in the widely shared CSV copy of Online Retail) is read as 1 December.
DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y %H:%M", "%Y-%m-%d",
)
_EXAMPLES = 5
_GZIP_MAGIC = b"\x1f\x8b"
# A CSV that is not valid UTF-8 is read as Windows-1252, which is what "Latin-1" exports (such as the
# widely shared Online Retail CSV) really are: it agrees with ISO-8859-1 on every printable character
# and adds '€', curly quotes and dashes in 0x80-0x9F. Its five undefined bytes are read as their
# ISO-8859-1 control characters, so decoding never fails and no byte is lost. (Polars' "utf8-lossy"
# would instead replace every such byte with U+FFFD, silently turning '£' and 'é' into '�'.)
_CP1252_THEN_LATIN1 = "".join(bytes([byte]).decode("cp1252", "ignore") or chr(byte) for byte in range(256))
# What a corrupt or unreadable file raises while it is scanned and collected.
_UNREADABLE = (pl.exceptions.PolarsError, fastexcel.FastExcelError, OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class InputFingerprint:
    """What was read: the source as given, its size and content hash."""

    source: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class IngestedTransactions:
    transactions: pl.DataFrame  # RawTransactions
    fingerprint: InputFingerprint
    planted_archetypes: pl.DataFrame | None = None  # CustomerID, archetype: known truth of synthetic data


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


def describe(loaded: IngestedTransactions) -> str:
    """One line naming the input, its size in rows and its hash."""
    fingerprint = loaded.fingerprint
    return f"{fingerprint.source} ({loaded.transactions.height:,} rows, sha256 {fingerprint.sha256[:12]}…)"


def load_transactions(source: str | Path, column_mapping: Mapping[str, str] | None = None) -> IngestedTransactions:
    """Read every file `source` names (a file, folder, glob, s3:// or https:// URL) into one RawTransactions frame."""
    text = str(source)
    with fetched(text, tuple(_SCANNERS)) as files:
        frames = [frame for file in files for frame in read_file(file, column_mapping or {})]
        input_fingerprint = fingerprint(text, files)
    transactions = pl.concat(frames)
    if transactions.height == 0:
        raise InputError(f"Input {text}: there is a header but no rows.")
    return IngestedTransactions(enforce(RawTransactions, transactions, f"Input {text}"), input_fingerprint)


def read_file(file: LocalFile, column_mapping: Mapping[str, str]) -> list[pl.DataFrame]:
    """Every table in `file` (a workbook has one per sheet) with canonical names and types."""
    if file.path.stat().st_size == 0:
        raise InputError(f"Input {file.name}: the file is empty.")
    suffix = _format_suffix(file)
    with tempfile.TemporaryDirectory(prefix="segments-ingest-") as scratch:
        try:
            # Renamed and selected before collecting, so Parquet and CSV read only the canonical columns.
            tables = [
                (label, rename_to_canonical(table, column_mapping, label).collect())
                for label, table in _SCANNERS[suffix](file, Path(scratch))
            ]
        except _UNREADABLE as error:
            raise InputError(f"Input {file.name}: cannot be read as {suffix} ({_first_line(error)}).") from None
    return [canonicalize_types(table, label) for label, table in tables]


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


def _scan_parquet(file: LocalFile, scratch: Path) -> list[tuple[str, pl.LazyFrame]]:
    """The Parquet file as one lazy table."""
    return [(file.name, pl.scan_parquet(file.path))]


def _scan_csv(file: LocalFile, scratch: Path) -> list[tuple[str, pl.LazyFrame]]:
    """The CSV as one lazy table, every column as text (types are decided later), decoded to UTF-8 if needed."""
    path = file.path if _is_utf8(file.path) else _decode_cp1252(file.path, scratch / "decoded.csv")
    return [(file.name, pl.scan_csv(path, infer_schema=False))]


def _open_decompressed(path: Path) -> BinaryIO:
    """The file's bytes, decompressed if it is gzip (recognised by its magic number, not its name)."""
    with path.open("rb") as probe:
        compressed = probe.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream in chunks, so large files never sit in memory whole."""
    return iter(lambda: stream.read(CHUNK_BYTES), b"")


def _is_utf8(path: Path) -> bool:
    """Whether the whole (decompressed) file is valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with _open_decompressed(path) as stream:
        try:
            for chunk in _chunks(stream):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _decode_cp1252(path: Path, target: Path) -> Path:
    """Write a UTF-8 copy of the Windows-1252 (or Latin-1) file to `target`; one byte is one character."""
    with _open_decompressed(path) as stream, target.open("wb") as copy:
        for chunk in _chunks(stream):
            copy.write(codecs.charmap_decode(chunk, "strict", _CP1252_THEN_LATIN1)[0].encode("utf-8"))
    return target


def _scan_workbook(file: LocalFile, scratch: Path) -> list[tuple[str, pl.LazyFrame]]:
    """Every sheet with cells, in workbook order, labelled with its name for error messages.

    Column types are inferred from every row, not a sample, so a column that mixes numbers and text,
    like the UCI workbook's InvoiceNo (536365 and "C536379"), becomes text instead of losing its
    text cells to null. fastexcel is used directly because it keeps empty rows, so row numbers in
    errors match the sheet, and tells a workbook without sheets from one with empty sheets.
    """
    workbook = fastexcel.read_excel(file.path)
    if not workbook.sheet_names:
        raise InputError(f"Input {file.name}: the workbook has no sheets.")
    sheets = {name: workbook.load_sheet(name, schema_sample_rows=None).to_polars() for name in workbook.sheet_names}
    tables = [(f"{file.name}, sheet {name!r}", sheet.lazy()) for name, sheet in sheets.items() if sheet.width]
    if not tables:
        raise InputError(f"Input {file.name}: every sheet of the workbook is empty ({', '.join(map(repr, sheets))}).")
    return tables


_SCANNERS: dict[str, Callable[[LocalFile, Path], list[tuple[str, pl.LazyFrame]]]] = {
    ".parquet": _scan_parquet, ".csv": _scan_csv, ".csv.gz": _scan_csv, ".xlsx": _scan_workbook,
}


def rename_to_canonical(table: pl.LazyFrame, column_mapping: Mapping[str, str], source: str) -> pl.LazyFrame:
    """Map known and user-given column names onto the canonical ones; extra columns are left out."""
    found = table.collect_schema().names()
    names = {**KNOWN_ALIASES, **column_mapping}
    renamed = table.rename({old: new for old, new in names.items() if old in found})
    missing = [column for column in CANONICAL_COLUMNS if column not in renamed.collect_schema().names()]
    if missing:
        raise InputError(
            f"Input {source}: required column(s) {', '.join(missing)} missing; found {', '.join(found)}. "
            "Map other names with a column mapping, e.g. --column-map 'Customer=CustomerID'."
        )
    return renamed.select(CANONICAL_COLUMNS)


def canonicalize_types(table: pl.DataFrame, source: str) -> pl.DataFrame:
    """Cast every column to its canonical type, naming the rows whose values cannot be converted."""
    return table.with_columns(
        *(_as_text(table[column]) for column in TEXT_COLUMNS),
        _checked_cast(table, "Quantity", _as_integer("Quantity"), source),
        _checked_cast(table, "UnitPrice", pl.col("UnitPrice").cast(pl.Float64, strict=False), source),
        _checked_cast(table, "CustomerID", _as_integer("CustomerID"), source),
        _checked_cast(table, "InvoiceDate", _as_datetime(table["InvoiceDate"]), source),
    )


def _as_text(values: pl.Series) -> pl.Expr:
    """Text without surrounding blanks; whole numbers without ".0", as Excel stores numeric invoice numbers."""
    column = pl.col(values.name)
    if values.dtype.is_float():
        as_integer_text = column.cast(pl.Int64, strict=False).cast(pl.String)
        column = pl.when(column == column.round()).then(as_integer_text).otherwise(column.cast(pl.String))
    return column.cast(pl.String).str.strip_chars().alias(values.name)


def _as_integer(column: str) -> pl.Expr:
    """Integer-like values ("17850", 17850.0) to Int64; anything fractional or non-numeric to null."""
    as_float = pl.col(column).cast(pl.Float64, strict=False)
    return pl.when(as_float == as_float.round()).then(as_float.cast(pl.Int64, strict=False)).alias(column)


def _as_datetime(values: pl.Series) -> pl.Expr:
    """Datetimes and dates are kept; text is parsed with the first format that fits every value.

    When no format fits every value, the one that fits most is used, so the error raised by
    `_checked_cast` lists the truly odd values rather than every row.
    """
    if values.dtype in (pl.Datetime, pl.Date):
        return pl.col(values.name).cast(pl.Datetime("us"))
    text = values.cast(pl.String).str.strip_chars()
    parsed_counts = {}
    for date_format in DATE_FORMATS:
        parsed_counts[date_format] = text.str.to_datetime(date_format, strict=False, time_unit="us").count()
        if parsed_counts[date_format] == text.count():
            break
    best_format = max(parsed_counts, key=parsed_counts.__getitem__)
    return pl.col(values.name).cast(pl.String).str.strip_chars().str.to_datetime(best_format, strict=False, time_unit="us")


def _checked_cast(table: pl.DataFrame, column: str, cast: pl.Expr, source: str) -> pl.Expr:
    """The cast expression, after checking that it turns no present value into null (rows counted from 1)."""
    lost = table.with_row_index("row", offset=1).filter(pl.col(column).is_not_null() & cast.is_null())
    if lost.height:
        examples = ", ".join(f"{value!r} (row {row})" for row, value in lost.select("row", column).head(_EXAMPLES).iter_rows())
        raise InputError(
            f"Input {source}: column {column} has {lost.height:,} value(s) that cannot be read as "
            f"{RawTransactions.to_schema().columns[column].dtype}, e.g. {examples}."
        )
    return cast.alias(column)


def fingerprint(source: str, files: Sequence[LocalFile]) -> InputFingerprint:
    """Total size and sha256 of the input: of its one file, or of the `sha256sum`-style listing of its files."""
    sizes_and_digests = [_size_and_sha256(file.path) for file in files]
    total_size = sum(size for size, _ in sizes_and_digests)
    if len(files) == 1:
        return InputFingerprint(source, total_size, sizes_and_digests[0][1])
    listing = "".join(f"{digest}  {file.name}\n" for file, (_, digest) in zip(files, sizes_and_digests))
    return InputFingerprint(source, total_size, hashlib.sha256(listing.encode()).hexdigest())


def _size_and_sha256(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in chunks so large inputs do not sit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in _chunks(stream):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()
