"""The synthetic default input: canonical shape, realistic dirt, and archetypes that behave as planted."""

from datetime import timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import RawTransactions
from tasks.generate import (
    ARCHETYPES,
    MIN_LINES,
    WINDOW_END,
    WINDOW_START,
    GeneratedData,
    generate_transactions,
    write_generated,
)

NON_PRODUCT_CODES = ("POST", "DOT", "M", "D", "BANK CHARGES", "AMAZONFEE", "CRUK", "S", "PADS")
IS_PRODUCT = pl.col("StockCode").str.contains(r"^\d{5}[A-Z]?$")
IS_CANCELLATION = pl.col("InvoiceNo").str.starts_with("C")
IS_ADJUSTMENT = pl.col("InvoiceNo").str.starts_with("A")


@pytest.fixture(scope="module", params=[MIN_LINES, 20_000], ids=["smallest", "20k"])
def generated(request) -> GeneratedData:
    return generate_transactions(request.param, seed=7)


@pytest.fixture(scope="module")
def large() -> GeneratedData:
    return generate_transactions(50_000, seed=3)


def purchase_orders(transactions: pl.DataFrame) -> pl.DataFrame:
    """One row per purchase invoice of a known customer: its date and value."""
    return (
        transactions.filter(pl.col("CustomerID").is_not_null() & ~IS_CANCELLATION & ~IS_ADJUSTMENT)
        .group_by("InvoiceNo")
        .agg(
            pl.col("CustomerID").first(),
            pl.col("InvoiceDate").first(),
            (pl.col("Quantity") * pl.col("UnitPrice")).sum().alias("value"),
        )
    )


def customer_behaviour(data: GeneratedData) -> pl.DataFrame:
    """Per customer: purchase invoices, days from the last purchase to the window's end, mean order value."""
    return (
        purchase_orders(data.transactions)
        .group_by("CustomerID")
        .agg(
            pl.len().alias("invoices"),
            pl.col("InvoiceDate").max().alias("last_purchase"),
            pl.col("value").mean().alias("order_value"),
        )
        .with_columns((pl.lit(WINDOW_END) - pl.col("last_purchase")).dt.total_days().alias("recency"))
        .join(data.archetypes, on="CustomerID")
    )


# --- shape -------------------------------------------------------------------------------------


def test_transactions_match_the_raw_contract(generated):
    RawTransactions.validate(generated.transactions)
    assert generated.transactions.columns == [
        "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
    ]


def test_archetypes_are_one_row_per_customer(generated):
    archetypes = generated.archetypes
    assert archetypes.schema == pl.Schema({"CustomerID": pl.Int64, "archetype": pl.String})
    assert archetypes["CustomerID"].is_unique().all()
    assert set(archetypes["archetype"]) == set(ARCHETYPES)
    customers = set(generated.transactions["CustomerID"].drop_nulls())
    assert customers == set(archetypes["CustomerID"])
    assert min(customers) >= 12346


@pytest.mark.parametrize("n_lines", [MIN_LINES, 5_000, 12_345, 50_000])
def test_row_count_is_within_5_percent_of_the_target(n_lines):
    assert abs(generate_transactions(n_lines).transactions.height - n_lines) <= 0.05 * n_lines


@settings(max_examples=15, deadline=None)
@given(n_lines=st.integers(MIN_LINES, 30_000), seed=st.integers(0, 2**32 - 1))
def test_any_size_and_seed_gives_valid_data_with_every_archetype(n_lines, seed):
    data = generate_transactions(n_lines, seed)
    RawTransactions.validate(data.transactions)
    assert abs(data.transactions.height - n_lines) <= 0.05 * n_lines
    assert set(data.archetypes["archetype"]) == set(ARCHETYPES)


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    first, again, other = (generate_transactions(5_000, seed) for seed in (1, 1, 2))
    assert first.transactions.equals(again.transactions)
    assert first.archetypes.equals(again.archetypes)
    assert not first.transactions.equals(other.transactions)


@pytest.mark.parametrize("n_lines", [0, 99, MIN_LINES - 1])
def test_too_few_lines_are_rejected_with_a_clear_message(n_lines):
    with pytest.raises(ValueError, match="n_lines must be at least 1,000"):
        generate_transactions(n_lines)


def test_looks_like_the_online_retail_export(generated):
    transactions = generated.transactions
    products = transactions.filter(IS_PRODUCT)
    assert transactions["InvoiceNo"].str.contains(r"^[CA]?\d{6}$").all()
    assert products["Description"].str.contains(r"^[A-Z ]+$").all()
    assert 0.4 <= products["UnitPrice"].filter(products["UnitPrice"] > 0).median() <= 5
    assert 0.8 <= (transactions["Country"] == "United Kingdom").mean() <= 0.97
    assert transactions.height / transactions["InvoiceNo"].n_unique() > 5  # many lines per invoice


def test_invoices_fall_on_trading_days_in_shop_hours(generated):
    dates = generated.transactions["InvoiceDate"]
    assert dates.min() >= WINDOW_START
    assert dates.max() < WINDOW_END + timedelta(days=1)
    assert dates.dt.hour().is_between(7, 20).all()
    assert (dates.dt.second() == 0).all()
    assert not (dates.dt.weekday() == 6).any()  # closed on Saturdays


def test_invoice_numbers_rise_with_the_invoice_date(generated):
    invoices = generated.transactions.group_by("InvoiceNo").agg(pl.col("InvoiceDate").first())
    by_number = invoices.sort(pl.col("InvoiceNo").str.strip_chars_start("CA").cast(pl.Int64))
    assert by_number["InvoiceDate"].is_sorted()


# --- dirt --------------------------------------------------------------------------------------


def test_guest_checkouts_are_whole_invoices_without_customer(generated):
    transactions = generated.transactions
    assert transactions["CustomerID"].null_count() >= 1
    customers_per_invoice = transactions.group_by("InvoiceNo").agg(pl.col("CustomerID").is_null().n_unique())
    assert (customers_per_invoice["CustomerID"] == 1).all()


def test_about_a_fifth_of_lines_are_guest_checkouts(large):
    assert 0.2 <= large.transactions["CustomerID"].is_null().mean() <= 0.25


def test_about_one_percent_of_lines_are_exact_duplicates(generated):
    transactions = generated.transactions
    repeated = transactions.height - transactions.unique().height
    assert 1 <= repeated <= 0.02 * transactions.height


def test_cancellations_reverse_an_earlier_purchase_of_the_same_customer(generated):
    transactions = generated.transactions
    returns = transactions.filter(IS_CANCELLATION & IS_PRODUCT).with_row_index("return")
    assert returns.height >= 1
    assert (returns["Quantity"] < 0).all()
    assert returns["CustomerID"].null_count() == 0
    purchases = transactions.filter(~IS_CANCELLATION).select(
        "CustomerID", "StockCode", "UnitPrice",
        pl.col("Quantity").alias("bought"), pl.col("InvoiceDate").alias("bought_at"),
    )
    matched = returns.join(purchases, on=["CustomerID", "StockCode", "UnitPrice"]).filter(
        (pl.col("bought_at") < pl.col("InvoiceDate")) & (pl.col("bought") >= -pl.col("Quantity"))
    )
    assert matched["return"].n_unique() == returns.height
    assert 0.005 <= returns.height / transactions.height <= 0.03


def test_bad_debt_adjustments_have_no_customer(generated):
    adjustments = generated.transactions.filter(IS_ADJUSTMENT)
    assert adjustments.height >= 1
    assert (adjustments["StockCode"] == "B").all()
    assert (adjustments["Description"] == "Adjust bad debt").all()
    assert adjustments["CustomerID"].null_count() == adjustments.height


@pytest.mark.parametrize("stock_code", NON_PRODUCT_CODES)
def test_every_non_product_code_occurs(generated, stock_code):
    assert (generated.transactions["StockCode"] == stock_code).any()


def test_discounts_are_negative_lines_on_cancellation_invoices(generated):
    discounts = generated.transactions.filter(pl.col("StockCode") == "D")
    assert discounts["InvoiceNo"].str.starts_with("C").all()
    assert (discounts["Quantity"] < 0).all()


def test_some_lines_have_a_zero_price(generated):
    assert (generated.transactions["UnitPrice"] == 0).any()


def test_dirt_hits_customers_of_every_archetype(large):
    transactions = large.transactions
    dirty = pl.concat([
        transactions.filter(IS_CANCELLATION),
        transactions.filter(transactions.is_duplicated()),
        transactions.filter(pl.col("UnitPrice") == 0),
        transactions.filter(pl.col("StockCode").is_in(NON_PRODUCT_CODES)),
    ])
    for kind in (IS_CANCELLATION, pl.col("UnitPrice") == 0):
        customers = transactions.filter(kind).join(large.archetypes, on="CustomerID")
        assert customers["archetype"].n_unique() >= 4
    assert set(dirty.join(large.archetypes, on="CustomerID")["archetype"]) == set(ARCHETYPES)


# --- archetypes --------------------------------------------------------------------------------


def test_one_off_customers_buy_exactly_once(large):
    one_off = customer_behaviour(large).filter(pl.col("archetype") == "one_off")
    assert one_off.height > 0
    assert (one_off["invoices"] == 1).all()


def test_lapsed_customers_stopped_early_in_the_window(large):
    lapsed = customer_behaviour(large).filter(pl.col("archetype") == "lapsed")
    cutoff = WINDOW_START + 0.4 * (WINDOW_END - WINDOW_START)
    assert (lapsed["last_purchase"] < cutoff).all()


def test_loyal_customers_buy_often_and_recently(large):
    behaviour = customer_behaviour(large)
    loyal = behaviour.filter(pl.col("archetype") == "loyal_high_value")
    regular = behaviour.filter(pl.col("archetype") == "regular_mid_value")
    assert loyal["invoices"].median() > regular["invoices"].median()
    assert loyal["invoices"].min() >= 10
    assert loyal["recency"].max() <= 21
    assert regular["recency"].max() <= 91


def test_wholesale_orders_are_several_times_larger_than_regular_ones(large):
    behaviour = customer_behaviour(large)
    median_order = behaviour.group_by("archetype").agg(pl.col("order_value").median())
    value = dict(median_order.iter_rows())
    assert value["wholesale"] > 5 * value["regular_mid_value"]
    assert value["one_off"] < value["regular_mid_value"] < value["loyal_high_value"]


def test_archetype_shares_are_roughly_as_planted(large):
    shares = large.archetypes["archetype"].value_counts(normalize=True)
    share = dict(shares.iter_rows())
    assert share["one_off"] > share["regular_mid_value"] > share["loyal_high_value"]
    assert all(0.05 <= share[name] <= 0.45 for name in ARCHETYPES)


# --- writing -----------------------------------------------------------------------------------


def test_write_generated_in_one_batch_equals_generate_transactions(tmp_path):
    transactions_path, archetypes_path = write_generated(tmp_path, 20_000, seed=5)
    expected = generate_transactions(20_000, seed=5)
    assert pl.read_parquet(transactions_path).equals(expected.transactions)
    assert pl.read_parquet(archetypes_path).equals(expected.archetypes)


def test_write_generated_appends_batches_of_fresh_customers(tmp_path):
    transactions_path, archetypes_path = write_generated(tmp_path, 20_000, seed=5, batch_lines=5_000)
    transactions, archetypes = pl.read_parquet(transactions_path), pl.read_parquet(archetypes_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["archetypes.parquet", "transactions.parquet"]
    RawTransactions.validate(transactions)
    assert abs(transactions.height - 20_000) <= 0.05 * 20_000
    # Each batch runs through the whole window, so the dates start over three times.
    date_restarts = transactions["InvoiceDate"].diff().dt.total_days() < -300
    assert date_restarts.sum() == 3
    assert archetypes["CustomerID"].is_unique().all()
    assert set(transactions["CustomerID"].drop_nulls()) == set(archetypes["CustomerID"])
    assert set(archetypes["archetype"]) == set(ARCHETYPES)
    per_invoice = transactions.group_by("InvoiceNo").agg(pl.col("InvoiceDate", "CustomerID").n_unique())
    assert (per_invoice["InvoiceDate"] == 1).all() and (per_invoice["CustomerID"] == 1).all()


def test_write_generated_rejects_tiny_batches(tmp_path):
    with pytest.raises(ValueError, match="batch_lines must be at least"):
        write_generated(tmp_path, 20_000, batch_lines=10)
