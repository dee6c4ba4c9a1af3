"""Ingest: read an invoice-line export into the canonical raw-transactions frame.

Both UCI shapes are understood ("Online Retail": InvoiceNo/UnitPrice/CustomerID and
"Online Retail II": Invoice/Price/Customer ID); other exports map their names with
`column_mapping`. Ingest never drops a row: judging rows is cleaning's job.
"""

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from schemas import RawTransactions
from tasks.contracts import enforce
from tasks.errors import InputError
from tasks.generate import GeneratedData

CANONICAL_COLUMNS = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
)
KNOWN_ALIASES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}

# Tried in order; the first that parses every non-null value wins, so "12/1/2010 8:26"
# (US month-first, as in the widely shared CSV copy of Online Retail) is read as 1 December.
DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
    "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y %H:%M", "%Y-%m-%d",
)
_EXAMPLES = 5


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
    """Read `source` (Parquet or CSV, optionally gzip-compressed) into a RawTransactions frame."""
    path = Path(source)
    if not path.is_file():
        raise InputError(f"Input {source}: no such file.")
    if path.stat().st_size == 0:
        raise InputError(f"Input {source}: the file is empty.")
    table = read_table(path)
    if table.height == 0:
        raise InputError(f"Input {source}: the file has a header but no rows.")
    canonical = canonicalize_types(rename_to_canonical(table, column_mapping or {}, str(source)), str(source))
    transactions = enforce(RawTransactions, canonical, f"Input {source}")
    return IngestedTransactions(transactions, fingerprint(path))


def read_table(path: Path) -> pl.DataFrame:
    """Read a Parquet or CSV file as it is, all CSV columns as text (types are decided later)."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if suffixes.endswith(".parquet"):
            return pl.read_parquet(path)
        if suffixes.endswith((".csv", ".csv.gz", ".txt")):
            return pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
    except (pl.exceptions.PolarsError, OSError) as error:
        raise InputError(f"Input {path}: cannot be read as {suffixes or 'a table'} ({error}).") from None
    raise InputError(f"Input {path}: unsupported format {suffixes or '(no extension)'}; use .parquet or .csv.")


def rename_to_canonical(table: pl.DataFrame, column_mapping: Mapping[str, str], source: str) -> pl.DataFrame:
    """Map known and user-given column names onto the canonical ones; extra columns are left out."""
    names = {**KNOWN_ALIASES, **column_mapping}
    renamed = table.rename({old: new for old, new in names.items() if old in table.columns})
    missing = [column for column in CANONICAL_COLUMNS if column not in renamed.columns]
    if missing:
        raise InputError(
            f"Input {source}: required column(s) {', '.join(missing)} missing; found {', '.join(table.columns)}. "
            "Map other names with a column mapping, e.g. --column-map 'Customer=CustomerID'."
        )
    return renamed.select(CANONICAL_COLUMNS)


def canonicalize_types(table: pl.DataFrame, source: str) -> pl.DataFrame:
    """Cast every column to its canonical type, naming the rows whose values cannot be converted."""
    return table.with_columns(
        pl.col("InvoiceNo", "StockCode", "Description", "Country").cast(pl.String).str.strip_chars(),
        _checked_cast(table, "Quantity", _as_integer("Quantity"), source),
        _checked_cast(table, "UnitPrice", pl.col("UnitPrice").cast(pl.Float64, strict=False), source),
        _checked_cast(table, "CustomerID", _as_integer("CustomerID"), source),
        _checked_cast(table, "InvoiceDate", _as_datetime(table["InvoiceDate"]), source),
    )


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


def fingerprint(path: Path) -> InputFingerprint:
    """Size and sha256 of the file, read in chunks so large inputs do not sit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return InputFingerprint(str(path), path.stat().st_size, digest.hexdigest())
