"""ingest -> clean -> features three ways: the project's own stages (in memory or streamed), DuckDB SQL and
notebook-style pandas.

Each engine reads one Parquet or CSV export and returns the customer features table. The DuckDB
engine applies tasks/clean.py's rules in their order, each row attributed to the first rule
that catches it, and then computes the features with the SQL of the features oracle
(tests/test_features_oracle.py), so the project is compared with the same work done well in SQL.
"""

from pathlib import Path
from tempfile import TemporaryDirectory

import duckdb
import polars as pl

from bench.measure import Outcome
from schemas.clean_transactions import EARLIEST_PLAUSIBLE_DATE
from tasks.clean import DEFAULT_NON_PRODUCT_CODES, CleanedTransactions, clean_in_batches, clean_transactions
from tasks.features import build_features
from tasks.ingest import load_transactions, stage_transactions
from tests.test_features_oracle import FEATURES_SQL

# The project's memory target for 50M lines; beyond it DuckDB spills to disk instead of taking its
# default of 80% of the machine's memory, which other work on the machine needs too.
DUCKDB_MEMORY_LIMIT = "6GB"


def run_project(path: str) -> Outcome:
    """The project's ingest, clean and features functions, as the flow calls them."""
    return project_outcome(clean_transactions(load_transactions(path).transactions))


def run_project_streaming(path: str) -> Outcome:
    """The same stages as `segments run --streaming true` calls them: batches through Parquet files."""
    with TemporaryDirectory(prefix="bench-streaming-") as folder:
        staged = stage_transactions(path, Path(folder) / "raw")
        return project_outcome(clean_in_batches(staged.transactions, Path(folder) / "clean"))


def project_outcome(cleaned: CleanedTransactions) -> Outcome:
    """The features of the cleaned lines, and the counts every engine reports."""
    features = build_features(cleaned.lines, cleaned.returns)
    return Outcome({"customers": features.height, "clean_rows": cleaned.funnel.clean_rows}, features)


def duckdb_reader(path: str) -> str:
    """DuckDB's table function for the file, with its path as the $path parameter."""
    return "read_parquet($path)" if path.endswith(".parquet") else "read_csv($path)"


def sql_text_list(values: list[str]) -> str:
    """A SQL list of string literals."""
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def cleaning_sql(path: str) -> str:
    """Flag every line with the first cleaning rule that removes it (NULL: clean), as tasks/clean.py orders them."""
    codes = [code.upper() for code in DEFAULT_NON_PRODUCT_CODES]
    exact = sql_text_list([code for code in codes if not code.endswith("*")])
    prefixes = " OR ".join(f"starts_with(upper(StockCode), '{code[:-1]}')" for code in codes if code.endswith("*"))
    return f"""
    CREATE TEMP TABLE flagged AS
    WITH raw AS (
        SELECT trim(InvoiceNo::VARCHAR) AS InvoiceNo, trim(StockCode::VARCHAR) AS StockCode,
               trim(Description::VARCHAR) AS Description, Quantity::BIGINT AS Quantity,
               InvoiceDate::TIMESTAMP AS InvoiceDate, UnitPrice::DOUBLE AS UnitPrice,
               CustomerID::BIGINT AS CustomerID, trim(Country::VARCHAR) AS Country
        FROM {duckdb_reader(path)}
    )
    SELECT *, CASE
        WHEN CustomerID IS NULL THEN 'missing_customer_id'
        WHEN InvoiceNo IS NULL OR StockCode IS NULL OR Quantity IS NULL OR InvoiceDate IS NULL
             OR UnitPrice IS NULL OR Country IS NULL THEN 'missing_field'
        -- Identical lines get identical flags from the two rules above, so numbering copies among
        -- all lines equals numbering them among the lines those rules left.
        WHEN row_number() OVER (PARTITION BY InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
                                             UnitPrice, CustomerID, Country) > 1 THEN 'exact_duplicate'
        WHEN InvoiceDate < TIMESTAMP '{EARLIEST_PLAUSIBLE_DATE:%Y-%m-%d %H:%M:%S}' OR InvoiceDate > now()::TIMESTAMP
             THEN 'implausible_date'
        WHEN starts_with(InvoiceNo, 'C') OR Quantity < 0 THEN 'cancellation'
        WHEN starts_with(InvoiceNo, 'A') THEN 'adjustment'
        WHEN upper(StockCode) IN ({exact}) OR {prefixes} THEN 'non_product'
        WHEN Quantity = 0 THEN 'zero_quantity'
        -- DuckDB orders NaN above every number, so `> 0` alone would keep it.
        WHEN NOT (UnitPrice > 0) OR NOT isfinite(UnitPrice) THEN 'non_positive_price'
    END AS rule
    FROM raw
    """


def run_duckdb(path: str) -> Outcome:
    """Cleaning rules and features in DuckDB SQL, in one in-memory database."""
    with duckdb.connect() as connection:
        connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        connection.execute("SET enable_progress_bar = false")
        connection.execute(cleaning_sql(path), {"path": path})
        connection.execute("CREATE TEMP VIEW lines AS SELECT * EXCLUDE (rule) FROM flagged WHERE rule IS NULL")
        connection.execute("CREATE TEMP VIEW returns AS SELECT * EXCLUDE (rule) FROM flagged WHERE rule = 'cancellation'")
        features = connection.sql(FEATURES_SQL).pl()
        clean_rows = connection.execute("SELECT count(*) FROM lines").fetchone()[0]
    return Outcome({"customers": features.height, "clean_rows": clean_rows}, features)


def run_pandas(path: str) -> Outcome:
    """The notebook-style pandas version (pandas is optional, so it is imported only here)."""
    from bench.pandas_notebook import notebook_features

    features, clean_rows = notebook_features(path)
    return Outcome({"customers": len(features), "clean_rows": clean_rows}, pl.from_pandas(features.reset_index()))
