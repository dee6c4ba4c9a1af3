"""Contract for invoice lines as ingested: canonical names and types, any values.

Row rules belong to cleaning, so every column may be null here and nothing is rejected
for its value; ingest only promises that the columns exist with these types.
"""

import polars as pl
import pandera.polars as pa


class RawTransactions(pa.DataFrameModel):
    """Invoice lines in the canonical (UCI Online Retail) shape."""

    InvoiceNo: str = pa.Field(nullable=True, description="Invoice number; 'C' prefix = cancellation, 'A' = adjustment")
    StockCode: str = pa.Field(nullable=True, description="Product code, or a non-product code such as POST")
    Description: str = pa.Field(nullable=True, description="Product name as printed on the invoice")
    Quantity: pl.Int64 = pa.Field(nullable=True, description="Units on the line; negative on cancellations")
    InvoiceDate: pl.Datetime("us") = pa.Field(nullable=True, description="Invoice timestamp, local time")
    UnitPrice: pl.Float64 = pa.Field(nullable=True, description="Price per unit in the shop's currency")
    CustomerID: pl.Int64 = pa.Field(nullable=True, description="Customer key; null for guest checkouts")
    Country: str = pa.Field(nullable=True, description="Customer's country")

    class Config:
        strict = True
