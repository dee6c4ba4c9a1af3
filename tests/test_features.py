"""Customer features worked out by hand on a few invoices, and the contract on the real data."""

from datetime import date

import polars as pl
import pytest

from tasks.clean import clean_transactions
from tasks.features import build_features, default_snapshot_date
from tasks.ingest import load_transactions
from tests.conftest import invoice_lines

RAW = invoice_lines(
    # 17850: two invoices, a partial return of 85123A, a return of something never bought here.
    ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),   # 15.30
    ("536365", "71053", 6, "2010-12-01 08:26", 3.39, 17850),    # 20.34
    ("536366", "85123A", 4, "2010-12-05 10:00", 2.55, 17850, "EIRE"),  # 10.20
    ("C536379", "85123A", -2, "2010-12-06 09:00", 2.55, 17850),  # returns 2 of 10 units bought: 5.10
    ("C536380", "99999", -3, "2010-12-06 09:00", 1.00, 17850),   # bought before the data: unmatched
    # 12346: one huge order, all of it returned (more units "returned" than bought are capped).
    ("541431", "23166", 74215, "2011-01-18 10:01", 1.04, 12346),
    ("C541433", "23166", -80000, "2011-01-18 10:17", 1.04, 12346),
    # 13047: one unit in each of two calendar years.
    ("537000", "22960", 1, "2010-12-20 12:00", 10.0, 13047),
    ("540000", "22960", 1, "2011-01-10 12:00", 10.0, 13047),
)


@pytest.fixture(scope="module")
def features() -> dict[int, dict]:
    cleaned = clean_transactions(RAW)
    table = build_features(cleaned.lines, cleaned.returns)
    return {row["CustomerID"]: row for row in table.iter_rows(named=True)}


def test_snapshot_defaults_to_the_day_after_the_last_invoice():
    assert default_snapshot_date(clean_transactions(RAW).lines) == date(2011, 1, 19)


def test_repeat_buyer_with_a_partial_return(features):
    customer = features[17850]
    assert customer["Country"] == "EIRE"  # country of the most recent invoice
    assert customer["Recency"] == 45      # 2010-12-05 -> 2011-01-19
    assert customer["Tenure"] == 49       # 2010-12-01 -> 2011-01-19
    assert customer["FrequencyPurchase"] == 2
    assert customer["NumUniqueItems"] == 2
    assert customer["UniqueYears"] == 1
    gross = 15.30 + 20.34 + 10.20
    assert customer["Amount"] == pytest.approx(gross - 5.10, rel=1e-12)
    assert customer["ReturnRate"] == pytest.approx(5.10 / gross, rel=1e-12)
    assert customer["AvgOrderValue"] == pytest.approx((gross - 5.10) / 2, rel=1e-12)
    assert customer["AvgBasketSize"] == 8.0  # (6 + 6 + 4) units / 2 invoices
    assert customer["MeanInterpurchaseDays"] == pytest.approx(4 + 94 / 1440, rel=1e-12)  # 4 days 1h34m, one gap


def test_returns_never_exceed_what_was_bought(features):
    customer = features[12346]
    assert customer["Amount"] == 0.0
    assert customer["ReturnRate"] == 1.0
    assert customer["AvgOrderValue"] == 0.0


def test_one_time_buyer_interpurchase_is_their_tenure(features):
    customer = features[12346]
    assert customer["FrequencyPurchase"] == 1
    assert customer["Recency"] == customer["Tenure"] == 1
    assert customer["MeanInterpurchaseDays"] == 1.0


def test_years_and_gaps_of_a_customer_across_new_year(features):
    customer = features[13047]
    assert customer["UniqueYears"] == 2
    assert customer["MeanInterpurchaseDays"] == 21.0
    assert customer["Amount"] == 20.0 and customer["ReturnRate"] == 0.0


def test_explicit_snapshot_date_moves_recency_and_tenure():
    cleaned = clean_transactions(RAW)
    table = build_features(cleaned.lines, cleaned.returns, snapshot_date=date(2011, 2, 1))
    customer = table.filter(pl.col("CustomerID") == 17850).row(0, named=True)
    assert (customer["Recency"], customer["Tenure"]) == (58, 62)


@pytest.mark.slow
def test_real_data_has_one_valid_row_per_customer(real_data):
    cleaned = clean_transactions(load_transactions(real_data).transactions)
    table = build_features(cleaned.lines, cleaned.returns)
    assert table.height == cleaned.lines["CustomerID"].n_unique() == 4_334
    assert table["CustomerID"].is_unique().all()
