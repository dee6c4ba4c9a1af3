"""Shared fixtures: tiny hand-written invoice frames, the real data set, one Prefect test server."""

import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from schemas import RawTransactions

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "online_retail.parquet"

_RESULTS_FOLDER = pytest.StashKey[Path]()

RAW_SCHEMA = {name: column.dtype.type for name, column in RawTransactions.to_schema().columns.items()}


def pytest_configure(config: pytest.Config) -> None:
    """Settings for the whole session, made before any test module imports Prefect.

    Cached stage results of one test session must not leak into the next, nor into a user's own runs:
    they go to a folder of this session's, inherited by the subprocesses tests start, and removed at
    its end. A hook rather than module code, because bench/ imports test modules too.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_RESULTS_LOCAL_STORAGE_PATH" not in os.environ:
        config.stash[_RESULTS_FOLDER] = Path(tempfile.mkdtemp(prefix="segments-test-results-"))
        os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(config.stash[_RESULTS_FOLDER])


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RESULTS_FOLDER in config.stash:
        shutil.rmtree(config.stash[_RESULTS_FOLDER], ignore_errors=True)


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
