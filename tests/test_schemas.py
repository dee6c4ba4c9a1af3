"""Data contracts: each case breaks one check of one contract in one place, and the error names the column and check.

The valid frames below keep their contracts; a case changes one value of one row (or, for the checks of a
frame's shape, one column) and expects enforce() to name what broke, so removing that check fails its case.
"""

from datetime import datetime

import pandera.polars as pa
import polars as pl
import pytest

from schemas import CleanTransactions, CustomerFeatures, RawTransactions, SegmentAssignments
from tasks.contracts import enforce
from tasks.errors import DataContractError
from tests.conftest import invoice_lines

INF = float("inf")

LINES = invoice_lines(
    ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),
    ("536366", "22633", 2, "2010-12-01 08:28", 1.85, 13047, "France"),
)
VALID = {
    RawTransactions: LINES,
    CleanTransactions: LINES,
    CustomerFeatures: pl.DataFrame({
        "CustomerID": [17850, 13047], "Country": ["United Kingdom", "France"], "Recency": [3, 0],
        "FrequencyPurchase": [2, 1], "Amount": [10.0, 5.0], "NumUniqueItems": [3, 1], "UniqueYears": [1, 1],
        "Tenure": [30, 0], "AvgOrderValue": [5.0, 5.0], "AvgBasketSize": [2.0, 1.0], "ReturnRate": [0.0, 0.5],
        "MeanInterpurchaseDays": [27.0, 0.0],
    }),
    SegmentAssignments: pl.DataFrame({
        "CustomerID": [17850, 13047], "cluster": [0, -1], "segment": [0, -1], "segment_name": ["Loyal", "Outliers"],
        "risk_score": [0.2, 0.9], "risk": ["Low", "High"],
    }),
}


def with_first_value(frame: pl.DataFrame, column: str, value: object) -> pl.DataFrame:
    """The frame with `value`, of the column's type, in the first row of `column`."""
    first_row = pl.int_range(pl.len()) == 0
    replaced = pl.when(first_row).then(pl.lit(value, dtype=frame.schema[column])).otherwise(pl.col(column))
    return frame.with_columns(replaced.alias(column))


def with_an_extra_column(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(Segment=pl.lit("Loyal"))


def broken_by(contract: type[pa.DataFrameModel], broken: pl.DataFrame) -> str:
    """The message of the DataContractError that enforcing the contract on the broken frame raises."""
    with pytest.raises(DataContractError) as error:
        enforce(contract, broken, "test")
    return str(error.value)


@pytest.mark.parametrize("contract", VALID, ids=lambda contract: contract.__name__)
def test_the_valid_frames_keep_their_contracts(contract):
    assert enforce(contract, VALID[contract], "test").equals(VALID[contract])


@pytest.mark.parametrize(
    ("contract", "column", "value", "expected"),
    [
        (CleanTransactions, "InvoiceNo", None, "column 'InvoiceNo' fails not_nullable"),
        (CleanTransactions, "InvoiceNo", "C536379", "column 'InvoiceNo' fails str_matches('^[^CA]')"),
        (CleanTransactions, "InvoiceNo", "A563185", "column 'InvoiceNo' fails str_matches('^[^CA]')"),
        (CleanTransactions, "StockCode", None, "column 'StockCode' fails not_nullable"),
        (CleanTransactions, "Quantity", None, "column 'Quantity' fails not_nullable"),
        (CleanTransactions, "Quantity", 0, "column 'Quantity' fails greater_than(0)"),
        (CleanTransactions, "InvoiceDate", None, "column 'InvoiceDate' fails not_nullable"),
        (CleanTransactions, "InvoiceDate", datetime(1989, 12, 31),
         "column 'InvoiceDate' fails greater_than_or_equal_to(1990-01-01 00:00:00)"),
        (CleanTransactions, "UnitPrice", None, "column 'UnitPrice' fails not_nullable"),
        (CleanTransactions, "UnitPrice", 0.0, "column 'UnitPrice' fails greater_than(0)"),
        (CleanTransactions, "UnitPrice", INF, "column 'UnitPrice' fails UnitPrice must be finite"),
        (CleanTransactions, "CustomerID", None, "column 'CustomerID' fails not_nullable"),
        (CleanTransactions, "CustomerID", -1, "column 'CustomerID' fails greater_than_or_equal_to(0)"),
        (CleanTransactions, "Country", None, "column 'Country' fails not_nullable"),
        (CustomerFeatures, "CustomerID", 13047, "column 'CustomerID' fails field_uniqueness"),
        (CustomerFeatures, "CustomerID", -1, "column 'CustomerID' fails greater_than_or_equal_to(0)"),
        (CustomerFeatures, "Country", None, "column 'Country' fails not_nullable"),
        (CustomerFeatures, "Recency", -1, "column 'Recency' fails greater_than_or_equal_to(0)"),
        (CustomerFeatures, "FrequencyPurchase", 0, "column 'FrequencyPurchase' fails greater_than_or_equal_to(1)"),
        (CustomerFeatures, "Amount", -1.0, "column 'Amount' fails greater_than_or_equal_to(0)"),
        (CustomerFeatures, "Amount", INF, "column 'Amount' fails value must be finite"),
        (CustomerFeatures, "NumUniqueItems", 0, "column 'NumUniqueItems' fails greater_than_or_equal_to(1)"),
        (CustomerFeatures, "UniqueYears", 0, "column 'UniqueYears' fails greater_than_or_equal_to(1)"),
        (CustomerFeatures, "Tenure", -1, "column 'Tenure' fails greater_than_or_equal_to(0)"),
        (CustomerFeatures, "Tenure", 2, "fails Tenure must be at least Recency"),
        (CustomerFeatures, "AvgOrderValue", -1.0, "column 'AvgOrderValue' fails greater_than_or_equal_to(0)"),
        (CustomerFeatures, "AvgOrderValue", INF, "column 'AvgOrderValue' fails value must be finite"),
        (CustomerFeatures, "AvgBasketSize", 0.0, "column 'AvgBasketSize' fails greater_than(0)"),
        (CustomerFeatures, "AvgBasketSize", INF, "column 'AvgBasketSize' fails value must be finite"),
        (CustomerFeatures, "ReturnRate", 1.5, "column 'ReturnRate' fails in_range(0, 1)"),
        (CustomerFeatures, "ReturnRate", INF, "column 'ReturnRate' fails value must be finite"),
        (CustomerFeatures, "MeanInterpurchaseDays", -1.0,
         "column 'MeanInterpurchaseDays' fails greater_than_or_equal_to(0)"),
        (CustomerFeatures, "MeanInterpurchaseDays", INF, "column 'MeanInterpurchaseDays' fails value must be finite"),
        (SegmentAssignments, "CustomerID", 13047, "column 'CustomerID' fails field_uniqueness"),
        (SegmentAssignments, "CustomerID", -1, "column 'CustomerID' fails greater_than_or_equal_to(0)"),
        (SegmentAssignments, "cluster", -2, "column 'cluster' fails greater_than_or_equal_to(-1)"),
        (SegmentAssignments, "segment", -2, "column 'segment' fails greater_than_or_equal_to(-1)"),
        (SegmentAssignments, "segment_name", None, "column 'segment_name' fails not_nullable"),
        (SegmentAssignments, "risk_score", 1.5, "column 'risk_score' fails in_range(0, 1)"),
        (SegmentAssignments, "risk_score", INF, "column 'risk_score' fails risk_score must be finite"),
        (SegmentAssignments, "risk", "Severe", "column 'risk' fails isin(('Low', 'Medium', 'High'))"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_a_bad_value_breaks_the_contract(contract, column, value, expected):
    assert expected in broken_by(contract, with_first_value(VALID[contract], column, value))


@pytest.mark.parametrize(
    ("contract", "reshape", "expected"),
    [
        (RawTransactions, with_an_extra_column, "fails column_in_schema in 1 case(s), e.g. 'Segment'"),
        (CleanTransactions, with_an_extra_column, "fails column_in_schema in 1 case(s), e.g. 'Segment'"),
        (CustomerFeatures, with_an_extra_column, "fails column_in_schema in 1 case(s), e.g. 'Segment'"),
        (RawTransactions, lambda frame: frame.drop("Country"), "fails column_in_dataframe in 1 case(s), e.g. 'Country'"),
        (CustomerFeatures, lambda frame: frame.drop("Amount"), "fails column_in_dataframe in 1 case(s), e.g. 'Amount'"),
        (SegmentAssignments, lambda frame: frame.drop("risk"), "fails column_in_dataframe in 1 case(s), e.g. 'risk'"),
        (RawTransactions, lambda frame: frame.with_columns(pl.col("Quantity").cast(pl.Float64)),
         "column 'Quantity' fails dtype('Int64')"),
        (CustomerFeatures, lambda frame: frame.with_columns(pl.col("Recency").cast(pl.Float64)),
         "column 'Recency' fails dtype('Int64')"),
        (SegmentAssignments, lambda frame: frame.with_columns(pl.col("cluster").cast(pl.Float64)),
         "column 'cluster' fails dtype('Int64')"),
    ],
    ids=["raw-extra", "clean-extra", "features-extra", "raw-missing", "features-missing", "assignments-missing",
         "raw-dtype", "features-dtype", "assignments-dtype"],
)
def test_a_frame_of_the_wrong_shape_breaks_the_contract(contract, reshape, expected):
    assert expected in broken_by(contract, reshape(VALID[contract]))
