"""Contract for the published per-customer segment assignment."""

import pandera.polars as pa
import polars as pl


OUTLIER = -1
RISK_LEVELS = ("Low", "Medium", "High")


class SegmentAssignments(pa.DataFrameModel):
    """Which DBSCAN cluster and campaign segment each customer belongs to, and their churn risk."""

    CustomerID: pl.Int64 = pa.Field(unique=True, ge=0)
    cluster: pl.Int64 = pa.Field(ge=OUTLIER, description="DBSCAN cluster; -1 = outlier (noise or too small)")
    segment: pl.Int64 = pa.Field(ge=OUTLIER, description="Campaign segment id; -1 = the outliers group")
    segment_name: str = pa.Field(description="Readable segment name")
    risk_score: pl.Float64 = pa.Field(in_range={"min_value": 0, "max_value": 1})
    risk: str = pa.Field(isin=RISK_LEVELS)

    @pa.check("risk_score", error="risk_score must be finite")
    def risk_score_is_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_finite())
