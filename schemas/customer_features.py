"""Contract for the per-customer feature table that clustering and the report consume."""

import pandera.polars as pa
import polars as pl


class CustomerFeatures(pa.DataFrameModel):
    """One row per customer; every number finite and non-negative."""

    CustomerID: pl.Int64 = pa.Field(unique=True, ge=0)
    Country: str = pa.Field(description="Country of the customer's most recent invoice")
    Recency: pl.Int64 = pa.Field(ge=0, description="Days from the last purchase to the snapshot date")
    FrequencyPurchase: pl.Int64 = pa.Field(ge=1, description="Distinct invoices")
    Amount: pl.Float64 = pa.Field(ge=0, description="Net revenue after matched returns")
    NumUniqueItems: pl.Int64 = pa.Field(ge=1, description="Distinct StockCodes bought")
    UniqueYears: pl.Int64 = pa.Field(ge=1, description="Distinct calendar years with a purchase")
    Tenure: pl.Int64 = pa.Field(ge=0, description="Days from the first purchase to the snapshot date")
    AvgOrderValue: pl.Float64 = pa.Field(ge=0, description="Net revenue per invoice")
    AvgBasketSize: pl.Float64 = pa.Field(gt=0, description="Units per invoice")
    ReturnRate: pl.Float64 = pa.Field(in_range={"min_value": 0, "max_value": 1},
                                      description="Share of purchased value returned")
    MeanInterpurchaseDays: pl.Float64 = pa.Field(ge=0,
                                                 description="Mean days between invoices; Tenure for one-time buyers")

    @pa.check("Amount", "AvgOrderValue", "AvgBasketSize", "ReturnRate", "MeanInterpurchaseDays",
              error="value must be finite (no NaN or inf)")
    def is_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # Polars orders NaN above every number, so `ge=0` alone would let NaN through.
        return data.lazyframe.select(pl.col(data.key).is_finite())

    @pa.dataframe_check(error="Tenure must be at least Recency (first purchase precedes the last)")
    def tenure_covers_recency(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("Tenure") >= pl.col("Recency"))

    class Config:
        strict = True
