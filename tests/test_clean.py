"""Cleaning rules: attribution to the first matching rule, exact reconciliation, the contract."""

from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CleanTransactions
from tasks.clean import RULES, CleaningOptions, clean_transactions
from tasks.errors import InputError
from tasks.ingest import load_transactions
from tests.conftest import RAW_SCHEMA, invoice_lines


def removed_by_rule(cleaned) -> dict[str, list[int]]:
    return {
        rule: rows["source_row"].to_list()
        for (rule,), rows in cleaned.quarantine.group_by("rule", maintain_order=True)
    }


def test_each_rule_catches_its_rows_and_keeps_the_rest():
    raw = invoice_lines(
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),   # 0 kept
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),   # 1 exact duplicate of 0
        ("536366", "22633", 6, "2010-12-01 08:28", 1.85, None),     # 2 guest checkout
        ("C536379", "85123A", -2, "2010-12-02 09:41", 2.55, 17850),  # 3 cancellation
        ("A563185", "B", 1, "2011-08-12 14:50", 11062.06, 12346),   # 4 bad-debt adjustment
        ("536367", "POST", 1, "2010-12-01 08:34", 18.0, 17850),     # 5 postage
        ("536368", "gift_0001_20", 1, "2010-12-01 08:34", 20.0, 17850),  # 6 voucher, prefix rule, any case
        ("536369", "22960", 0, "2010-12-01 08:35", 4.25, 13047),    # 7 zero quantity
        ("536370", "22961", 3, "2010-12-01 08:35", 0.0, 13047),     # 8 free item
        ("536371", "22962", 3, "1989-12-31 23:59", 1.0, 13047),     # 9 implausible date
        ("536372", None, 3, "2010-12-01 08:35", 1.0, 13047),        # 10 missing StockCode
        ("536373", "22963", 2, "2010-12-03 10:00", 3.0, 12583, "France"),  # 11 kept
    )
    cleaned = clean_transactions(raw)

    assert removed_by_rule(cleaned) == {
        "exact_duplicate": [1], "missing_customer_id": [2], "cancellation": [3], "adjustment": [4],
        "non_product": [5, 6], "zero_quantity": [7], "non_positive_price": [8], "implausible_date": [9],
        "missing_field": [10],
    }
    assert cleaned.lines["InvoiceNo"].to_list() == ["536365", "536373"]
    assert cleaned.returns["InvoiceNo"].to_list() == ["C536379"]


def test_a_row_is_attributed_to_the_first_rule_in_order():
    # A guest cancellation of postage matches three rules; missing_customer_id comes first.
    cleaned = clean_transactions(invoice_lines(("C536380", "POST", -1, "2010-12-01 09:00", 18.0, None)))
    assert cleaned.quarantine["rule"].to_list() == ["missing_customer_id"]
    assert [rule.name for rule in RULES][:3] == ["missing_customer_id", "missing_field", "exact_duplicate"]


def test_country_filter_keeps_only_the_chosen_countries():
    raw = invoice_lines(
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850, "United Kingdom"),
        ("536366", "22633", 6, "2010-12-01 08:28", 1.85, 12583, "France"),
    )
    cleaned = clean_transactions(raw, CleaningOptions(countries=("United Kingdom",)))
    assert cleaned.lines["Country"].to_list() == ["United Kingdom"]
    assert removed_by_rule(cleaned) == {"country_not_selected": [1]}


def test_nan_price_is_quarantined_not_kept():
    raw = invoice_lines(("536365", "85123A", 6, "2010-12-01 08:26", float("nan"), 17850))
    assert clean_transactions(raw).quarantine["rule"].to_list() == ["non_positive_price"]


def test_quality_counts_every_rule_in_order():
    raw = invoice_lines(
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),
        ("536366", "22633", 6, "2010-12-01 08:28", 1.85, None),
    )
    quality = clean_transactions(raw).quality()
    assert [rule["rule"] for rule in quality["rules"]] == [rule.name for rule in RULES]
    assert quality["raw_rows"] == 2 and quality["clean_rows"] == 1 and quality["quarantined_rows"] == 1
    assert quality["raw_customers"] == 1 and quality["clean_customers"] == 1


def test_negative_placeholders_are_not_counted_as_customers():
    raw = invoice_lines(
        ("536365", "85123A", 6, "2010-12-01 08:26", 2.55, 17850),
        ("536366", "22633", 6, "2010-12-01 08:28", 1.85, -1),
        ("536367", "22633", 6, "2010-12-01 08:29", 1.85, 14527),
    )
    quality = clean_transactions(raw).quality()
    assert quality["raw_customers"] == 2 and quality["rules"][0]["customers_after"] == 2


def test_the_default_future_starts_when_cleaning_runs():
    just_now = (datetime.now() - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")  # after tasks.clean's import
    raw = invoice_lines(("536365", "85123A", 6, just_now[:16], 2.55, 17850)).with_columns(
        InvoiceDate=pl.lit(datetime.fromisoformat(just_now)))
    assert clean_transactions(raw).quarantine.height == 0


@pytest.mark.parametrize("customer, countries, message", [
    (17850, ("Narnia",), r"rule country_not_selected \(Country is outside the chosen country filter\) removed the "
                         r"last of the input's 1 customers"),
    (None, (), r"no line has a CustomerID"),
    (-1, (), r"no line has a CustomerID \(each is empty, or a negative placeholder of a guest checkout\)"),
])
def test_no_customer_left_is_an_input_error_naming_the_rule(customer, countries, message):
    raw = invoice_lines(("536365", "85123A", 6, "2010-12-01 08:26", 2.55, customer))
    funnel = clean_transactions(raw, CleaningOptions(countries=countries)).funnel
    with pytest.raises(InputError, match=message):
        funnel.require_customers()


def test_input_frame_is_not_modified():
    raw = invoice_lines(("536365", "85123A", 6, "2010-12-01 08:26", 2.55, None))
    before = raw.clone()
    clean_transactions(raw)
    assert raw.equals(before)


@pytest.mark.slow
def test_real_data_figures_and_reconciliation(real_data):
    raw = load_transactions(real_data).transactions
    cleaned = clean_transactions(raw)
    quality = cleaned.quality()
    removed = {rule["rule"]: rule["removed_rows"] for rule in quality["rules"]}
    customers_after = {rule["rule"]: rule["customers_after"] for rule in quality["rules"]}

    assert quality["raw_rows"] == 541_909
    assert removed["missing_customer_id"] == 135_080
    assert removed["exact_duplicate"] == 5_225  # 406,829 - 5,225 = 401,604 lines left
    assert quality["raw_customers"] == 4_372
    assert customers_after["cancellation"] == 4_339
    assert_reconciles(raw, cleaned)


def assert_reconciles(raw: pl.DataFrame, cleaned) -> None:
    """Clean lines plus quarantined lines are the raw lines: none lost, none invented, none twice."""
    assert cleaned.lines.height + cleaned.quarantine.height == raw.height
    assert cleaned.quarantine["source_row"].is_unique().all()
    columns = list(RAW_SCHEMA)
    recombined = pl.concat([cleaned.lines, cleaned.quarantine.select(columns)])
    assert recombined.sort(columns, nulls_last=True).equals(raw.sort(columns, nulls_last=True))


line_rows = st.tuples(
    st.sampled_from(["536365", "536366", "C536367", "A536368", "536369", ""]),
    st.sampled_from(["85123A", "22633", "POST", "M", "gift_0001_10", None]),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from(["2010-12-01 08:26", "2011-01-05 10:00", "1985-01-01 00:00", None]),
    st.sampled_from([2.55, 0.0, -1.0, float("nan"), float("inf"), 1e6, None]),
    st.sampled_from([17850, 12346, None]),
    st.sampled_from(["United Kingdom", "France", None]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(line_rows, max_size=40), st.booleans())
def test_invariants_on_arbitrary_lines(rows, uk_only):
    options = CleaningOptions(countries=("United Kingdom",) if uk_only else ())
    raw = invoice_lines(*rows)
    cleaned = clean_transactions(raw, options)

    assert_reconciles(raw, cleaned)
    CleanTransactions.validate(cleaned.lines)
    # Idempotence: cleaning clean lines removes nothing.
    again = clean_transactions(cleaned.lines, options)
    assert again.quarantine.height == 0 and again.lines.equals(cleaned.lines)
