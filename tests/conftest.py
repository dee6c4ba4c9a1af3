"""Shared fixtures: tiny hand-written invoice frames, the real data set, one Prefect test server."""

import os
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from schemas import RawTransactions

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "online_retail.parquet"

RAW_SCHEMA = {name: column.dtype.type for name, column in RawTransactions.to_schema().columns.items()}

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Cached stage results of one test session must not leak into the next, nor into a user's own runs;
# set before Prefect is imported, and inherited by the subprocesses tests start.
os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", tempfile.mkdtemp(prefix="segments-test-results-"))


def invoice_lines(*rows: tuple) -> pl.DataFrame:
    """A RawTransactions frame from (InvoiceNo, StockCode, Quantity, "YYYY-MM-DD HH:MM", UnitPrice, CustomerID[, Country])."""
    records = [
        {
            "InvoiceNo": invoice, "StockCode": stock_code, "Description": f"ITEM {stock_code}", "Quantity": quantity,
            "InvoiceDate": datetime.fromisoformat(when) if when else None, "UnitPrice": price, "CustomerID": customer,
            "Country": rest[0] if rest else "United Kingdom",
        }
        for invoice, stock_code, quantity, when, price, customer, *rest in rows
    ]
    return pl.DataFrame(records, schema=RAW_SCHEMA)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API for every flow test (starting one costs several seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
