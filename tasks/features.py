"""Customer features: one row per customer from the clean lines and their matched returns.

Recency and Tenure count calendar days from the day of the last (first) purchase to the
snapshot date, so with the default snapshot, the day after the last invoice, a customer who
bought on the last day has Recency 1.

Returns are matched per customer and StockCode: a return counts only against the units of that
product the customer bought within the data on or before its date (purchases first within the
same minute), valued at their average price for the product. Units returned beyond those bought
so far are returns of purchases made before the data starts: they cannot be matched and are
ignored, even if the customer buys the product again later. So net revenue never goes below zero
and ReturnRate stays within [0, 1]; a product returned in full nets to exactly zero.

MeanInterpurchaseDays is the time from first to last invoice, in fractional days, divided by
the number of gaps (invoices - 1). A one-time buyer has no gap; for them it is their Tenure,
the time they have gone without a second purchase so far, which is a lower bound of their true
interval and keeps them far from frequent buyers instead of looking like customers who buy
again at once.

Country is the country of the customer's most recent invoice; should invoices in two countries
share that minute, the alphabetically last country is taken, so the result never depends on
the order of the lines.

The lines and returns may be eager or lazy (e.g. `pl.scan_parquet`): the purchase history and the
product totals are each one query on Polars' streaming engine, and only per-customer results are
held in memory.
"""

from datetime import date, timedelta

import polars as pl

from schemas import CustomerFeatures
from tasks.contracts import enforce

# Behaviour that separates campaign segments without one binary feature dominating distances.
DEFAULT_CLUSTERING_FEATURES = ("Recency", "FrequencyPurchase", "Amount", "AvgOrderValue", "NumUniqueItems")

Frame = pl.DataFrame | pl.LazyFrame
# Money is summed as exact decimals (prices rounded to 1e-12): float sums depend on the order Polars
# adds in, which varies with threads and batches, and a last-bit difference can move a customer
# across a risk band's cut. Same lines, same bits.
MONEY = pl.Decimal(38, 12)


def build_features(lines: Frame, returns: Frame, snapshot_date: date | None = None) -> pl.DataFrame:
    """CustomerFeatures for every customer in `lines` (CleanTransactions), `returns` being cancellation lines.

    Without a snapshot_date, the snapshot is the day after the last invoice in `lines`.
    """
    purchases = lines.lazy().with_columns(line_value())
    # One after the other rather than as two branches of one query, which the streaming engine runs at
    # once: its peak would hold both aggregations' tables (5M generated lines: 770 MiB instead of 620).
    history = purchase_history(purchases).collect(engine="streaming")
    products = product_totals(products_bought(purchases, returns.lazy())).collect(engine="streaming")
    features = (
        history.lazy()
        .join(products.lazy(), on="CustomerID")
        .with_columns(snapshot(snapshot_date))
        .with_columns(recency(), tenure())
        .with_columns(avg_order_value(), avg_basket_size(), return_rate(), mean_interpurchase_days())
        .select(list(CustomerFeatures.to_schema().columns))
        .sort("CustomerID")
        .collect()
    )
    return enforce(CustomerFeatures, features, "Features")


def line_value() -> pl.Expr:
    """LineValue: Quantity x UnitPrice of one line, as MONEY."""
    return (pl.col("Quantity") * pl.col("UnitPrice").cast(MONEY)).alias("LineValue")


def purchase_history(purchases: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer: first and last purchase, distinct invoices and years, units and country."""
    return purchases.group_by("CustomerID").agg(
        pl.col("InvoiceDate").min().alias("FirstPurchase"),
        pl.col("InvoiceDate").max().alias("LastPurchase"),
        pl.col("InvoiceNo").n_unique().cast(pl.Int64).alias("FrequencyPurchase"),
        pl.col("InvoiceDate").dt.year().n_unique().cast(pl.Int64).alias("UniqueYears"),
        pl.col("Quantity").sum().alias("Units"),
        country(),
    )


def country() -> pl.Expr:
    """Country of the most recent invoice; the alphabetically last one if two share that minute."""
    return pl.col("Country").sort_by("InvoiceDate", "Country").last().alias("Country")


def products_bought(purchases: pl.LazyFrame, returns: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer and product bought: units and value bought, and the value of the matched returns."""
    bought = purchases.group_by("CustomerID", "StockCode").agg(
        pl.col("Quantity").sum().alias("BoughtUnits"), pl.col("LineValue").sum().alias("BoughtValue"),
    )
    return (
        bought.join(returned_units(purchases, returns), on=["CustomerID", "StockCode"], how="left")
        .with_columns(returned_value())
    )


def returned_units(purchases: pl.LazyFrame, returns: pl.LazyFrame) -> pl.LazyFrame:
    """ReturnedUnits per customer and product returned: the units returned that were bought here before.

    In time order, purchases before returns within a minute, the units bought minus the units returned
    so far fall below zero only by returns of purchases made before the data starts; the lowest they
    fall is the units that cannot be matched.
    """
    product = ["CustomerID", "StockCode"]
    returned = returns.select(*product, "InvoiceDate", -pl.col("Quantity").abs())
    # Only the purchases of returned products are ordered in time: a small share of the lines.
    bought = purchases.join(returned.select(product), on=product, how="semi").select(*product, "InvoiceDate", "Quantity")
    # Descending Quantity puts a minute's purchases before its returns.
    in_time_order = pl.col("Quantity").sort_by("InvoiceDate", "Quantity", descending=[False, True])
    return (
        pl.concat([bought, returned])
        .group_by(product)
        .agg(
            -pl.col("Quantity").filter(pl.col("Quantity") < 0).sum().alias("ReturnedUnits"),
            in_time_order.cum_sum().min().alias("LowestBalance"),
        )
        .select(*product, pl.col("ReturnedUnits") + pl.col("LowestBalance").clip(upper_bound=0))
    )


def returned_value() -> pl.Expr:
    """ReturnedValue of one product: the matched returned units at the average price paid."""
    matched_units = pl.col("ReturnedUnits").fill_null(0)
    # A product returned in full must net to exactly zero, which units x average price misses by rounding.
    return (
        pl.when(matched_units == pl.col("BoughtUnits")).then(pl.col("BoughtValue"))
        .otherwise(matched_units * pl.col("BoughtValue") / pl.col("BoughtUnits"))
        .alias("ReturnedValue")
    )


def product_totals(products: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer: NumUniqueItems, GrossRevenue, ReturnedValue and Amount, the net revenue product by product."""
    return products.group_by("CustomerID").agg(
        pl.len().cast(pl.Int64).alias("NumUniqueItems"),
        pl.col("BoughtValue").sum().cast(pl.Float64).alias("GrossRevenue"),
        pl.col("ReturnedValue").sum().cast(pl.Float64),
        (pl.col("BoughtValue") - pl.col("ReturnedValue")).sum().cast(pl.Float64).alias("Amount"),
    )


def snapshot(snapshot_date: date | None) -> pl.Expr:
    """Snapshot: the date given, or the day after the last purchase of any customer."""
    if snapshot_date is None:
        return (pl.col("LastPurchase").max().dt.date() + timedelta(days=1)).alias("Snapshot")
    return pl.lit(snapshot_date, dtype=pl.Date).alias("Snapshot")


def days_to_snapshot(timestamp: str) -> pl.Expr:
    """Calendar days from the day of the `timestamp` column to the snapshot date."""
    return (pl.col("Snapshot") - pl.col(timestamp).dt.date()).dt.total_days()


def recency() -> pl.Expr:
    """Recency: days from the last purchase to the snapshot date."""
    return days_to_snapshot("LastPurchase").alias("Recency")


def tenure() -> pl.Expr:
    """Tenure: days from the first purchase to the snapshot date."""
    return days_to_snapshot("FirstPurchase").alias("Tenure")


def avg_order_value() -> pl.Expr:
    """AvgOrderValue: net revenue per invoice."""
    return (pl.col("Amount") / pl.col("FrequencyPurchase")).alias("AvgOrderValue")


def avg_basket_size() -> pl.Expr:
    """AvgBasketSize: units per invoice."""
    return (pl.col("Units") / pl.col("FrequencyPurchase")).alias("AvgBasketSize")


def return_rate() -> pl.Expr:
    """ReturnRate: share of the purchased value returned."""
    # Guards against rounding: ReturnedValue and GrossRevenue are sums of different numbers.
    return (pl.col("ReturnedValue") / pl.col("GrossRevenue")).clip(upper_bound=1.0).alias("ReturnRate")


def mean_interpurchase_days() -> pl.Expr:
    """MeanInterpurchaseDays: first-to-last purchase time per gap between invoices; Tenure for one-time buyers."""
    gaps = pl.col("FrequencyPurchase") - 1
    first_to_last_days = (pl.col("LastPurchase") - pl.col("FirstPurchase")).dt.total_days(fractional=True)
    return (
        pl.when(gaps > 0).then(first_to_last_days / gaps)
        .otherwise(pl.col("Tenure").cast(pl.Float64))
        .alias("MeanInterpurchaseDays")
    )
