"""Cleaning: named rules, applied in order, that move rows from the lines to a quarantine.

Each rule is a Polars expression that flags rows to remove among those still remaining, so a
row is attributed to the first rule that catches it and `raw = clean + quarantined` holds to
the row. Cancellations are quarantined like any other removal but stay available to the
feature stage, which matches them to the purchases they reverse.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from schemas import CleanTransactions
from schemas.clean_transactions import EARLIEST_PLAUSIBLE_DATE
from tasks.contracts import enforce

# Postage, carriage, manual lines, discounts, fees, samples, commissions and gift vouchers:
# money moves, but no product does, so they say nothing about what a customer buys.
# A trailing "*" matches a prefix.
DEFAULT_NON_PRODUCT_CODES = (
    "POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "ADJUST", "GIFT_*",
)
SOURCE_ROW = "source_row"
RULE = "rule"
CANCELLATION = "cancellation"


@dataclass(frozen=True)
class CleaningOptions:
    """What the user can tune about cleaning."""

    non_product_codes: Sequence[str] = DEFAULT_NON_PRODUCT_CODES
    countries: Sequence[str] = ()  # empty: keep every country
    latest_plausible_date: datetime = field(default_factory=datetime.now)


@dataclass(frozen=True)
class CleaningRule:
    name: str
    description: str
    flags: Callable[[CleaningOptions], pl.Expr]  # true for rows this rule removes


def _non_product(options: CleaningOptions) -> pl.Expr:
    codes = [code.upper() for code in options.non_product_codes]
    exact = [code for code in codes if not code.endswith("*")]
    prefixes = [code[:-1] for code in codes if code.endswith("*")]
    stock_code = pl.col("StockCode").str.to_uppercase()
    return pl.any_horizontal(stock_code.is_in(exact), *(stock_code.str.starts_with(prefix) for prefix in prefixes))


RULES: tuple[CleaningRule, ...] = (
    # Some shop systems write guest checkouts as a negative placeholder such as -1 rather than leaving it empty.
    CleaningRule("missing_customer_id", "no CustomerID, or a negative placeholder (guest checkout): "
                 "cannot be tied to a customer", lambda _: pl.col("CustomerID").is_null() | (pl.col("CustomerID") < 0)),
    CleaningRule("missing_field", "InvoiceNo, StockCode, Quantity, InvoiceDate, UnitPrice or Country is empty",
                 lambda _: pl.any_horizontal(
                     pl.col("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country").is_null(),
                     pl.col("InvoiceNo", "StockCode", "Country").str.strip_chars() == "",
                 )),
    CleaningRule("exact_duplicate", "repeats an earlier line in every column (the first copy is kept)",
                 lambda _: ~pl.struct(pl.all().exclude(SOURCE_ROW)).is_first_distinct()),
    CleaningRule("implausible_date", "InvoiceDate before 1990 or in the future",
                 lambda o: (pl.col("InvoiceDate") < EARLIEST_PLAUSIBLE_DATE)
                 | (pl.col("InvoiceDate") > o.latest_plausible_date)),
    CleaningRule(CANCELLATION, "'C' invoice or negative quantity: a return, matched to purchases by the features",
                 lambda _: pl.col("InvoiceNo").str.starts_with("C") | (pl.col("Quantity") < 0)),
    CleaningRule("adjustment", "'A' invoice: a bad-debt adjustment, not a sale",
                 lambda _: pl.col("InvoiceNo").str.starts_with("A")),
    CleaningRule("non_product", "StockCode is postage, a fee, a discount or similar (see non_product_codes)",
                 _non_product),
    CleaningRule("zero_quantity", "Quantity is 0", lambda _: pl.col("Quantity") == 0),
    CleaningRule("non_positive_price", "UnitPrice is 0, negative or not a number",
                 lambda _: ~(pl.col("UnitPrice") > 0) | ~pl.col("UnitPrice").is_finite()),
    CleaningRule("country_not_selected", "Country is outside the chosen country filter",
                 lambda o: ~pl.col("Country").is_in(list(o.countries)) if o.countries else pl.lit(False)),
)


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    description: str
    removed_rows: int
    customers_after: int


@dataclass(frozen=True)
class CleanedTransactions:
    lines: pl.DataFrame       # CleanTransactions
    quarantine: pl.DataFrame  # raw columns + source_row + rule
    outcomes: tuple[RuleOutcome, ...]
    raw_rows: int
    raw_customers: int

    @property
    def returns(self) -> pl.DataFrame:
        """Cancellation lines of known customers, for matching against their purchases."""
        return self.quarantine.filter(pl.col(RULE) == CANCELLATION).drop(RULE, SOURCE_ROW)

    def quality(self) -> dict:
        """The cleaning funnel as plain JSON-able data (quality.json, manifest, report)."""
        return {
            "raw_rows": self.raw_rows,
            "clean_rows": self.lines.height,
            "quarantined_rows": self.quarantine.height,
            "raw_customers": self.raw_customers,
            "clean_customers": self.lines["CustomerID"].n_unique(),
            "rules": [vars(outcome) for outcome in self.outcomes],
        }


def clean_transactions(raw: pl.DataFrame, options: CleaningOptions = CleaningOptions()) -> CleanedTransactions:
    """Apply RULES in order; return the clean lines (validated), the quarantine and per-rule counts."""
    remaining = raw.with_row_index(SOURCE_ROW)
    quarantined, outcomes = [], []
    for rule in RULES:
        flagged = remaining.with_columns(rule.flags(options).fill_null(True).alias(RULE))
        removed = flagged.filter(pl.col(RULE)).with_columns(pl.lit(rule.name).alias(RULE))
        remaining = flagged.filter(~pl.col(RULE)).drop(RULE)
        quarantined.append(removed)
        outcomes.append(RuleOutcome(rule.name, rule.description, removed.height, remaining["CustomerID"].n_unique()))
    quarantine = pl.concat(quarantined).sort(SOURCE_ROW)
    lines = enforce(CleanTransactions, remaining.drop(SOURCE_ROW), "Cleaning")
    return CleanedTransactions(lines, quarantine, tuple(outcomes), raw.height, raw["CustomerID"].drop_nulls().n_unique())
