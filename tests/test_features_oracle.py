"""Customer features on the real data against an independent oracle written in DuckDB SQL.

The oracle follows the definitions in the docstring of tasks/features.py, not its code: if the
two disagree, one of them misreads the definitions.
"""

import duckdb
import polars as pl
import pytest

from tasks.clean import CleanedTransactions, CleaningOptions, clean_transactions
from tasks.features import build_features
from tasks.ingest import load_transactions
from tests.test_features import SEED_LIKE_UK

FEATURES_SQL = """
WITH purchases AS (
    SELECT *, Quantity * UnitPrice AS LineValue FROM lines
),
history AS (
    SELECT CustomerID,
           min(InvoiceDate) AS FirstPurchase,
           max(InvoiceDate) AS LastPurchase,
           count(DISTINCT InvoiceNo) AS FrequencyPurchase,
           count(DISTINCT StockCode) AS NumUniqueItems,
           count(DISTINCT year(InvoiceDate)) AS UniqueYears,
           sum(LineValue) AS GrossRevenue,
           sum(Quantity)::DOUBLE AS Units
    FROM purchases GROUP BY CustomerID
),
latest_country AS (
    SELECT CustomerID, Country FROM purchases
    QUALIFY row_number() OVER (PARTITION BY CustomerID ORDER BY InvoiceDate DESC, Country DESC) = 1
),
bought AS (
    SELECT CustomerID, StockCode, sum(Quantity) AS BoughtUnits, sum(LineValue) AS BoughtValue
    FROM purchases GROUP BY CustomerID, StockCode
),
movements AS (
    SELECT CustomerID, StockCode, InvoiceDate, Quantity FROM purchases SEMI JOIN returns USING (CustomerID, StockCode)
    UNION ALL
    SELECT CustomerID, StockCode, InvoiceDate, -abs(Quantity) FROM returns
),
balances AS (
    -- Units bought minus units returned so far, purchases before returns within a minute.
    SELECT CustomerID, StockCode, Quantity,
           sum(Quantity) OVER (PARTITION BY CustomerID, StockCode ORDER BY InvoiceDate, Quantity DESC) AS Balance
    FROM movements
),
returned AS (
    -- Below zero, the balance counts returns of purchases made before the data starts.
    SELECT CustomerID, StockCode, sum(-Quantity) FILTER (WHERE Quantity < 0) + least(min(Balance), 0) AS ReturnedUnits
    FROM balances GROUP BY CustomerID, StockCode
),
returned_value AS (
    SELECT CustomerID, sum(ReturnedUnits * BoughtValue / BoughtUnits) AS ReturnedValue
    FROM returned JOIN bought USING (CustomerID, StockCode) GROUP BY CustomerID
),
snapshot AS (
    SELECT max(InvoiceDate)::DATE + 1 AS Snapshot FROM purchases
),
netted AS (
    SELECT history.*, Country,
           coalesce(ReturnedValue, 0) AS ReturnedValue,
           greatest(GrossRevenue - coalesce(ReturnedValue, 0), 0) AS Amount,
           date_diff('day', LastPurchase::DATE, Snapshot) AS Recency,
           date_diff('day', FirstPurchase::DATE, Snapshot) AS Tenure
    FROM history
    JOIN latest_country USING (CustomerID)
    LEFT JOIN returned_value USING (CustomerID)
    CROSS JOIN snapshot
)
SELECT CustomerID, Country, Recency, FrequencyPurchase, Amount, NumUniqueItems, UniqueYears, Tenure,
       Amount / FrequencyPurchase AS AvgOrderValue,
       Units / FrequencyPurchase AS AvgBasketSize,
       least(ReturnedValue / GrossRevenue, 1) AS ReturnRate,
       CASE WHEN FrequencyPurchase > 1
            THEN (epoch_us(LastPurchase) - epoch_us(FirstPurchase)) / 86400e6 / (FrequencyPurchase - 1)
            ELSE Tenure END AS MeanInterpurchaseDays
FROM netted ORDER BY CustomerID
"""

# The seed: drop lines without CustomerID, then exact duplicates, then 'C' invoices; here on the UK.
SEED_FEATURES_SQL = """
WITH seed AS (
    SELECT DISTINCT * FROM read_parquet($path)
    WHERE CustomerID IS NOT NULL AND NOT starts_with(InvoiceNo, 'C') AND Country = 'United Kingdom'
)
SELECT CustomerID::BIGINT AS CustomerID,
       date_diff('day', max(InvoiceDate)::DATE, (SELECT max(InvoiceDate)::DATE + 1 FROM seed)) AS Recency,
       count(DISTINCT InvoiceNo) AS FrequencyPurchase,
       count(DISTINCT StockCode) AS NumUniqueItems,
       count(DISTINCT year(InvoiceDate)) AS UniqueYears
FROM seed GROUP BY CustomerID ORDER BY CustomerID
"""

ALL_COUNTRIES = CleaningOptions()
REL_TOL = 1e-9
ABS_TOL = 1e-9  # pounds, days or shares: far below anything that matters, far above rounding noise


@pytest.fixture(scope="module")
def raw(real_data) -> pl.DataFrame:
    return load_transactions(real_data).transactions


@pytest.fixture(scope="module", params=[ALL_COUNTRIES, SEED_LIKE_UK], ids=["all countries", "United Kingdom"])
def cleaned(raw, request) -> CleanedTransactions:
    return clean_transactions(raw, request.param)


def oracle_features(cleaned: CleanedTransactions) -> pl.DataFrame:
    """Every feature of build_features, computed by DuckDB from the clean lines and the returns."""
    with duckdb.connect() as connection:
        connection.register("lines", cleaned.lines)
        connection.register("returns", cleaned.returns)
        return connection.sql(FEATURES_SQL).pl()


def mismatches(ours: pl.DataFrame, oracle: pl.DataFrame, column: str) -> pl.DataFrame:
    """Customers whose `column` differs: exactly for integers and text, beyond tolerance for floats."""
    both = ours.select("CustomerID", column).join(oracle.select("CustomerID", column), on="CustomerID", suffix="Oracle")
    ours_value, oracle_value = pl.col(column), pl.col(f"{column}Oracle")
    if ours.schema[column] == pl.Float64:
        differs = ~ours_value.is_close(oracle_value, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    else:
        differs = ours_value != oracle_value
    return both.filter(differs)


@pytest.mark.slow
def test_every_feature_agrees_with_the_duckdb_oracle(cleaned):
    ours, oracle = build_features(cleaned.lines, cleaned.returns), oracle_features(cleaned)
    assert ours["CustomerID"].to_list() == oracle["CustomerID"].to_list()
    for column in ours.drop("CustomerID").columns:
        wrong = mismatches(ours, oracle, column)
        assert wrong.is_empty(), f"{column}: {wrong}"


@pytest.mark.slow
def test_no_customer_has_two_countries_in_their_last_minute(cleaned):
    # So the real data never exercises the Country tie-break; test_features.py does.
    with duckdb.connect() as connection:
        connection.register("lines", cleaned.lines)
        ties = connection.sql("""
            WITH latest AS (SELECT CustomerID, max(InvoiceDate) AS InvoiceDate FROM lines GROUP BY CustomerID)
            SELECT count(*) FROM (
                SELECT CustomerID FROM lines JOIN latest USING (CustomerID, InvoiceDate)
                GROUP BY CustomerID HAVING count(DISTINCT Country) > 1
            )
        """).pl().item()
    assert ties == 0


@pytest.mark.slow
def test_seed_features_of_uk_customers_differ_only_where_free_lines_were_removed(raw, real_data):
    seed = duckdb.sql(SEED_FEATURES_SQL, params={"path": str(real_data)}).pl()
    cleaned = clean_transactions(raw, SEED_LIKE_UK)
    ours = build_features(cleaned.lines, cleaned.returns)
    assert seed.height == 3_921
    assert set(seed["CustomerID"]) - set(ours["CustomerID"]) == {13256}  # bought nothing but free lines
    different = set().union(*(mismatches(ours, seed, column)["CustomerID"] for column in seed.columns[1:]))
    # Each bought at price 0, besides paid lines: a product nowhere else on their invoices
    # (NumUniqueItems one less here) or a whole invoice of free lines (FrequencyPurchase one less).
    assert different == {12748, 13239, 16133, 16406, 16560, 17560}
