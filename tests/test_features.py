"""Customer features worked out by hand on a few invoices, and the seed's features of real customers."""

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tasks.clean import RULE, CleanedTransactions, CleaningOptions, clean_transactions
from tasks.features import build_features
from tasks.generate import write_generated
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
    # 14911: two products, both returned in full (6 x (6 x 0.42) / 6 is not 6 x 0.42 in floating point).
    ("541000", "22712", 6, "2011-01-05 10:00", 0.42, 14911),
    ("541000", "23344", 6, "2011-01-05 10:00", 2.08, 14911),
    ("C541001", "22712", -6, "2011-01-06 10:00", 0.42, 14911),
    ("C541001", "23344", -6, "2011-01-06 10:00", 2.08, 14911),
)


@pytest.fixture(scope="module")
def features() -> dict[int, dict]:
    cleaned = clean_transactions(RAW)
    table = build_features(cleaned.lines, cleaned.returns)
    return {row["CustomerID"]: row for row in table.iter_rows(named=True)}


def test_snapshot_defaults_to_the_day_after_the_last_invoice():
    cleaned = clean_transactions(RAW)
    assert_frame_equal(
        build_features(cleaned.lines, cleaned.returns),
        build_features(cleaned.lines, cleaned.returns, snapshot_date=date(2011, 1, 19)),  # last invoice 2011-01-18
    )


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


def test_products_returned_in_full_net_to_exactly_zero(features):
    customer = features[14911]
    assert (customer["Amount"], customer["AvgOrderValue"], customer["ReturnRate"]) == (0.0, 0.0, 1.0)


# 15000 buys 4 of 22423 in February and 6 more in March, 12.75 each.
PURCHASES_OF_ONE_PRODUCT = (
    ("550000", "22423", 4, "2011-02-01 10:00", 12.75, 15000),
    ("560000", "22423", 6, "2011-03-01 10:00", 12.75, 15000),
)


def amount_and_return_rate(*lines: tuple) -> tuple[float, float]:
    cleaned = clean_transactions(invoice_lines(*lines))
    customer = build_features(cleaned.lines, cleaned.returns).row(0, named=True)
    return customer["Amount"], customer["ReturnRate"]


def test_a_return_dated_before_the_first_purchase_of_the_product_is_ignored():
    # A unit bought before the data starts, returned in January: it nets against nothing bought later.
    early_return = ("C540000", "22423", -1, "2011-01-15 10:00", 12.75, 15000)
    assert amount_and_return_rate(*PURCHASES_OF_ONE_PRODUCT, early_return) == (127.5, 0.0)


def test_a_return_counts_only_against_the_units_bought_by_its_date():
    returned_after_first_purchase = ("C550001", "22423", -2, "2011-02-10 10:00", 12.75, 15000)
    assert amount_and_return_rate(*PURCHASES_OF_ONE_PRODUCT, returned_after_first_purchase) == (102.0, 0.2)
    # 10 returned with 4 bought so far: 6 of them were bought before the data starts, not in March.
    more_than_bought_so_far = ("C550001", "22423", -10, "2011-02-10 10:00", 12.75, 15000)
    assert amount_and_return_rate(*PURCHASES_OF_ONE_PRODUCT, more_than_bought_so_far) == (76.5, 0.4)
    # Within one minute the purchase comes first, whatever the order of the lines.
    same_minute = ("C550001", "22423", -4, "2011-02-01 10:00", 12.75, 15000)
    assert amount_and_return_rate(same_minute, *PURCHASES_OF_ONE_PRODUCT) == (76.5, 0.4)


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


def test_country_tie_in_the_last_minute_goes_to_the_alphabetically_last_country():
    lines = invoice_lines(
        ("550000", "22111", 1, "2011-01-03 09:00", 1.0, 14000, "Spain"),
        ("550001", "22111", 1, "2011-01-10 09:00", 1.0, 14000, "France"),
        ("550002", "22111", 1, "2011-01-10 09:00", 1.0, 14000, "Belgium"),
    )
    for ordered in (lines, lines.reverse()):
        cleaned = clean_transactions(ordered)
        assert build_features(cleaned.lines, cleaned.returns)["Country"].to_list() == ["France"]


def test_lazy_input_from_parquet_gives_the_eager_result(tmp_path: Path):
    transactions, _ = write_generated(tmp_path, 20_000, seed=3)
    cleaned = clean_transactions(load_transactions(transactions).transactions)
    cleaned.lines.write_parquet(tmp_path / "lines.parquet")
    cleaned.returns.write_parquet(tmp_path / "returns.parquet")
    lazy = build_features(pl.scan_parquet(tmp_path / "lines.parquet"), pl.scan_parquet(tmp_path / "returns.parquet"))
    eager = build_features(cleaned.lines, cleaned.returns)
    assert lazy.height > 100
    assert_frame_equal(lazy, eager, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.slow
def test_real_data_has_one_valid_row_per_customer(real_data):
    cleaned = clean_transactions(load_transactions(real_data).transactions)
    table = build_features(cleaned.lines, cleaned.returns)
    assert table.height == cleaned.lines["CustomerID"].n_unique() == 4_334
    assert table["CustomerID"].is_unique().all()


# The seed's cleaning drops lines without CustomerID, then exact duplicates, then cancellations.
# The cleaning rules here drop more: empty fields, implausible dates, 'A' adjustments and zero
# quantities (no line with a CustomerID in the real data has any of these), non-product codes
# (switched off below) and zero or negative prices (40 lines the seed keeps).
SEED_LIKE_UK = CleaningOptions(non_product_codes=(), countries=("United Kingdom",))


@pytest.fixture(scope="module")
def seed_like_uk(real_data) -> CleanedTransactions:
    return clean_transactions(load_transactions(real_data).transactions, SEED_LIKE_UK)


@pytest.mark.slow
def test_seed_like_cleaning_of_the_uk_loses_one_customer_who_only_got_free_items(seed_like_uk):
    assert {outcome.rule: (outcome.removed_rows, outcome.customers_after) for outcome in seed_like_uk.funnel.outcomes} == {
        "missing_customer_id": (135_080, 4_372),
        "missing_field": (0, 4_372),
        "exact_duplicate": (5_225, 4_372),
        "implausible_date": (0, 4_372),
        "cancellation": (8_872, 4_339),  # the seed's 4,339 customers with a purchase line
        "adjustment": (0, 4_339),
        "non_product": (0, 4_339),
        "zero_quantity": (0, 4_339),
        "non_positive_price": (40, 4_338),
        "country_not_selected": (43_489, 3_920),
    }
    # The seed counts 3,921 UK customers: these 3,920 and 13256, whose one line is free.
    free_only = seed_like_uk.quarantine.filter(pl.col("CustomerID") == 13256)
    assert free_only.select("InvoiceNo", "StockCode", "Quantity", "UnitPrice", RULE).rows() == [
        ("578841", "84826", 12_540, 0.0, "non_positive_price"),
    ]


@pytest.mark.slow
def test_seed_features_of_real_uk_customers_worked_out_by_hand(seed_like_uk):
    # The last UK purchase is at 2011-12-09 12:49, so the snapshot date is 2011-12-10.
    # (Recency, FrequencyPurchase, NumUniqueItems, UniqueYears) from each customer's whole history:
    expected = {
        # Bought on the last day. 553573 on 2011-05-18: 22980, 22982; 581483 on 2011-12-09 09:15:
        # 80,995 x 23843, cancelled by C581484 at 09:27, which is no purchase. 12-09 -> 12-10: 1 day.
        16446: (1, 2, 3, 1),
        # Across the new year: 536838 on 2010-12-02: 15036, 72232, 40016; 580361 on 2011-12-02:
        # 35001G. 12-02 -> 12-10: 8 days.
        14865: (8, 2, 4, 2),
        # One product, three times: 85123A in 537460 on 2010-12-07, 548217 on 2011-03-30 and
        # 557255 on 2011-06-19. 06-19 -> 12-10: 11 days of June, 31+31+30+31+30 to November, 10.
        17616: (174, 3, 1, 2),
        # One-time buyer: 576512 on 2011-11-15, 4 x 22823. 11-15 -> 12-10: 15 + 10 days.
        15524: (25, 1, 1, 1),
        # One-time buyer who cancelled it all: 541431 on 2011-01-18, 74,215 x 23166, and C541433
        # 16 minutes later. 01-18 -> 12-10: 13 days of January, 303 from February to November, 10.
        12346: (326, 1, 1, 1),
    }
    features = build_features(seed_like_uk.lines, seed_like_uk.returns)
    seed_features = features.select("CustomerID", "Recency", "FrequencyPurchase", "NumUniqueItems", "UniqueYears")
    assert {row[0]: row[1:] for row in seed_features.iter_rows() if row[0] in expected} == expected
