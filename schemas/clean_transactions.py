"""Contract for invoice lines that survived cleaning: real product purchases by known customers."""

from datetime import datetime

import pandera.polars as pa
import polars as pl

from schemas.raw_transactions import RawTransactions

# Retail exports before 1990 are typing errors, not history. (So are dates after "now", which cleaning's
# implausible_date rule removes; this contract checks only what does not depend on when it runs.)
EARLIEST_PLAUSIBLE_DATE = datetime(1990, 1, 1)


class CleanTransactions(RawTransactions):
    """Purchase lines with a customer, a product, a positive quantity and a positive price."""

    InvoiceNo: str = pa.Field(nullable=False, str_matches=r"^[^CA]")
    StockCode: str = pa.Field(nullable=False)
    Quantity: pl.Int64 = pa.Field(nullable=False, gt=0)
    InvoiceDate: pl.Datetime("us") = pa.Field(nullable=False, ge=EARLIEST_PLAUSIBLE_DATE)
    UnitPrice: pl.Float64 = pa.Field(nullable=False, gt=0)
    CustomerID: pl.Int64 = pa.Field(nullable=False, ge=0)
    Country: str = pa.Field(nullable=False)

    @pa.check("UnitPrice", error="UnitPrice must be finite")
    def unit_price_is_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # Polars orders NaN above every number, so `gt=0` alone would let NaN through.
        return data.lazyframe.select(pl.col(data.key).is_finite())
