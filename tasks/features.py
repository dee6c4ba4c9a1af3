"""Customer features: one row per customer from the clean lines and their matched returns.

Returns are matched per customer and StockCode: a customer can return at most the units of a
product they bought within the data, valued at their average price for it. Returns of products
bought before the data starts cannot be matched and are ignored, so net revenue never goes
below zero and ReturnRate stays within [0, 1].

MeanInterpurchaseDays is the time from first to last invoice divided by the number of gaps.
A one-time buyer has no gap; for them it is their Tenure, the time they have gone without a
second purchase so far, which is a lower bound of their true interval and keeps them far from
frequent buyers instead of looking like customers who buy again at once.
"""

from datetime import date, timedelta

import polars as pl

from schemas import CustomerFeatures
from tasks.contracts import enforce

SECONDS_PER_DAY = 86_400.0
# Behaviour that separates campaign segments without one binary feature dominating distances.
DEFAULT_CLUSTERING_FEATURES = ("Recency", "FrequencyPurchase", "Amount", "AvgOrderValue", "NumUniqueItems")


def default_snapshot_date(lines: pl.DataFrame) -> date:
    """The day after the last invoice in the clean lines."""
    return lines["InvoiceDate"].max().date() + timedelta(days=1)


def build_features(lines: pl.DataFrame, returns: pl.DataFrame, snapshot_date: date | None = None) -> pl.DataFrame:
    """CustomerFeatures for every customer in `lines` (CleanTransactions), `returns` being cancellation lines."""
    snapshot = pl.lit(snapshot_date or default_snapshot_date(lines)).cast(pl.Date)
    purchases = lines.lazy().with_columns((pl.col("Quantity") * pl.col("UnitPrice")).alias("LineValue"))
    per_customer = purchases.group_by("CustomerID").agg(
        pl.col("InvoiceDate").min().alias("FirstPurchase"),
        pl.col("InvoiceDate").max().alias("LastPurchase"),
        pl.col("InvoiceNo").n_unique().cast(pl.Int64).alias("FrequencyPurchase"),
        pl.col("StockCode").n_unique().cast(pl.Int64).alias("NumUniqueItems"),
        pl.col("InvoiceDate").dt.year().n_unique().cast(pl.Int64).alias("UniqueYears"),
        pl.col("LineValue").sum().alias("GrossRevenue"),
        pl.col("Quantity").sum().alias("Units"),
        pl.col("Country").sort_by("InvoiceDate").last().alias("Country"),
    )
    features = (
        per_customer.join(returned_value(purchases, returns.lazy()), on="CustomerID", how="left")
        .with_columns(pl.col("ReturnedValue").fill_null(0.0))
        .with_columns(
            (pl.col("GrossRevenue") - pl.col("ReturnedValue")).clip(lower_bound=0.0).alias("Amount"),
            (snapshot - pl.col("LastPurchase").dt.date()).dt.total_days().cast(pl.Int64).alias("Recency"),
            (snapshot - pl.col("FirstPurchase").dt.date()).dt.total_days().cast(pl.Int64).alias("Tenure"),
        )
        .with_columns(
            (pl.col("Amount") / pl.col("FrequencyPurchase")).alias("AvgOrderValue"),
            (pl.col("Units") / pl.col("FrequencyPurchase")).cast(pl.Float64).alias("AvgBasketSize"),
            (pl.col("ReturnedValue") / pl.col("GrossRevenue")).clip(0.0, 1.0).alias("ReturnRate"),
            pl.when(pl.col("FrequencyPurchase") > 1)
            .then((pl.col("LastPurchase") - pl.col("FirstPurchase")).dt.total_seconds() / SECONDS_PER_DAY
                  / (pl.col("FrequencyPurchase") - 1))
            .otherwise(pl.col("Tenure").cast(pl.Float64))
            .alias("MeanInterpurchaseDays"),
        )
        .select(list(CustomerFeatures.to_schema().columns))
        .sort("CustomerID")
        .collect()
    )
    return enforce(CustomerFeatures, features, "Features")


def returned_value(purchases: pl.LazyFrame, returns: pl.LazyFrame) -> pl.LazyFrame:
    """Value of the returned units that match units the same customer bought, per customer."""
    bought = purchases.group_by("CustomerID", "StockCode").agg(
        pl.col("Quantity").sum().alias("BoughtUnits"), pl.col("LineValue").sum().alias("BoughtValue"),
    )
    returned = (
        returns.filter(pl.col("CustomerID").is_not_null())
        .group_by("CustomerID", "StockCode")
        .agg(pl.col("Quantity").abs().sum().alias("ReturnedUnits"))
    )
    return (
        returned.join(bought, on=["CustomerID", "StockCode"], how="inner")
        .with_columns(
            (pl.min_horizontal("ReturnedUnits", "BoughtUnits") * pl.col("BoughtValue") / pl.col("BoughtUnits"))
            .alias("ReturnedValue")
        )
        .group_by("CustomerID")
        .agg(pl.col("ReturnedValue").sum())
    )
