"""Cleaning: named rules, applied in order, that move rows from the lines to a quarantine.

Each rule is a Polars expression that flags rows to remove; a row is attributed to the first
rule, in RULES order, that flags it, so `raw = clean + quarantined` holds to the row and each
rule's count is what it removes among the rows the rules before it left. Cancellations are quarantined like any other removal but stay available to the
feature stage, which matches them to the purchases they reverse.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from schemas import CleanTransactions
from schemas.clean_transactions import EARLIEST_PLAUSIBLE_DATE
from tasks.contracts import enforce
from tasks.errors import InputError, room_checked
from tasks.ingest import own_folder

# Postage, carriage, manual lines, discounts, fees, samples, commissions and gift vouchers:
# money moves, but no product does, so they say nothing about what a customer buys.
# A trailing "*" matches a prefix.
DEFAULT_NON_PRODUCT_CODES = (
    "POST", "DOT", "C2", "M", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "ADJUST", "GIFT_*",
)
SOURCE_ROW = "source_row"
RULE = "rule"
CANCELLATION = "cancellation"
RANK = "rank"  # position in RULES of the rule that removes a line; len(RULES) for a clean one
REPEATS_EARLIER_LINE = "repeats_earlier_line"  # set by repeated_rows, read by the exact_duplicate rule
DEFAULT_BATCH_ROWS = 1_000_000

Frame = pl.DataFrame | pl.LazyFrame


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
    # One case-insensitive pattern: a whole code, or a prefix for a code ending in "*".
    alternatives = [re.escape(code[:-1]) if code.endswith("*") else re.escape(code) + "$"
                    for code in options.non_product_codes]
    if not alternatives:
        return pl.lit(False)
    return pl.col("StockCode").str.contains(f"(?i)^(?:{'|'.join(alternatives)})")


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
                 lambda _: pl.col(REPEATS_EARLIER_LINE)),
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
class CleaningFunnel:
    """Rows and customers in, what each rule removed, what is left."""

    raw_rows: int
    raw_customers: int
    outcomes: tuple[RuleOutcome, ...]
    clean_rows: int
    clean_customers: int

    @property
    def quarantined_rows(self) -> int:
        return sum(outcome.removed_rows for outcome in self.outcomes)

    def require_customers(self) -> None:
        """An InputError if no customer is left to segment, naming the rule that removed the last ones."""
        if self.clean_customers:
            return
        if not self.raw_customers:
            raise InputError("Cleaning: no line has a CustomerID (each is empty, or a negative placeholder of a guest "
                             "checkout), so there is no customer to segment; check that the export includes customer "
                             "numbers (map its column with --column-map if it is named otherwise).")
        last = next(outcome for outcome in self.outcomes if outcome.customers_after == 0)
        raise InputError(
            f"Cleaning left no customer to segment: rule {last.rule} ({last.description}) removed the last of the "
            f"input's {self.raw_customers:,} customers. Check the country filter and non-product codes against the "
            "export's values."
        )

    def quality(self) -> dict:
        """The funnel as plain JSON-able data (quality.json, manifest, report)."""
        return {
            "raw_rows": self.raw_rows,
            "clean_rows": self.clean_rows,
            "quarantined_rows": self.quarantined_rows,
            "raw_customers": self.raw_customers,
            "clean_customers": self.clean_customers,
            "rules": [vars(outcome) for outcome in self.outcomes],
        }


@dataclass(frozen=True)
class CleanedTransactions:
    """Cleaning's result; when streamed, the frames are lazy scans of the Parquet files it wrote."""

    lines: Frame       # CleanTransactions
    quarantine: Frame  # raw columns + source_row + rule, in source-row order
    funnel: CleaningFunnel

    @property
    def returns(self) -> Frame:
        """Cancellation lines of known customers, for matching against their purchases."""
        return self.quarantine.filter(pl.col(RULE) == CANCELLATION).drop(RULE, SOURCE_ROW)

    def quality(self) -> dict:
        return self.funnel.quality()


def clean_transactions(raw: pl.DataFrame, options: CleaningOptions | None = None) -> CleanedTransactions:
    """Apply RULES in order; return the clean lines (validated), the quarantine and per-rule counts.

    Without options, the defaults, with "the future" starting now.
    """
    numbered = raw.with_row_index(SOURCE_ROW)
    lines, quarantine, tally = clean_batch(numbered, repeated_rows(numbered.lazy()), options or CleaningOptions())
    return CleanedTransactions(lines, quarantine, funnel_of([tally]))


def clean_in_batches(raw: pl.LazyFrame, folder: Path, options: CleaningOptions | None = None,
                     batch_rows: int = DEFAULT_BATCH_ROWS) -> CleanedTransactions:
    """clean_transactions for input larger than memory: `batch_rows` lines at a time, results written under `folder`.

    The lines and quarantine become numbered Parquet files in a new folder's lines/ and quarantine/,
    returned as lazy scans; memory holds one batch and the source rows of repeated lines.
    """
    options = options or CleaningOptions()
    folder = own_folder(folder, "cleaned-")
    numbered = raw.with_row_index(SOURCE_ROW)
    repeated = repeated_rows(numbered)
    tallies = []
    for index, batch in enumerate(numbered.collect_batches(chunk_size=batch_rows)):
        lines, quarantine, tally = clean_batch(batch, repeated, options)
        for part, rows in (("lines", lines), ("quarantine", quarantine)):
            (folder / part).mkdir(exist_ok=True)
            with room_checked("Cleaning", f"its batches of {part}", folder):
                rows.write_parquet(folder / part / f"{index:06d}.parquet")
        tallies.append(tally)
    return CleanedTransactions(pl.scan_parquet(folder / "lines" / "*.parquet"),
                               pl.scan_parquet(folder / "quarantine" / "*.parquet"), funnel_of(tallies))


@dataclass(frozen=True)
class RankTally:
    """What the rules did to some lines: rows per rank (rule position; len(RULES) is clean) and each customer's best."""

    rows_per_rank: tuple[int, ...]
    furthest_rank: pl.DataFrame  # CustomerID, rank: how far the customer's furthest line got through RULES


def clean_batch(numbered: pl.DataFrame, repeated: pl.Series,
                options: CleaningOptions) -> tuple[pl.DataFrame, pl.DataFrame, RankTally]:
    """Clean lines (validated), quarantine and tally of some numbered lines, given every repeated line's source row."""
    # Polars' streaming engine spreads the rules, and the group_by below, over every core; eager, one column
    # expression runs on one.
    ranked = (numbered.lazy()
              .with_columns(pl.col(SOURCE_ROW).is_in(repeated.implode()).alias(REPEATS_EARLIER_LINE))
              .select(*numbered.columns, first_rule_rank(options))
              .collect(engine="streaming"))
    is_clean = pl.col(RANK) == len(RULES)
    rule_names = [rule.name for rule in RULES]
    quarantine = ranked.filter(~is_clean).with_columns(
        pl.col(RANK).replace_strict(range(len(RULES)), rule_names, return_dtype=pl.String).alias(RULE)).drop(RANK)
    lines = enforce(CleanTransactions, ranked.filter(is_clean).drop(SOURCE_ROW, RANK), "Cleaning")
    rows_per_rank = dict(ranked[RANK].value_counts().iter_rows())
    furthest_rank = (ranked.lazy().filter(pl.col("CustomerID") >= 0).group_by("CustomerID").agg(pl.col(RANK).max())
                     .collect(engine="streaming"))
    return lines, quarantine, RankTally(tuple(rows_per_rank.get(rank, 0) for rank in range(len(RULES) + 1)),
                                        furthest_rank)


def first_rule_rank(options: CleaningOptions) -> pl.Expr:
    """The position in RULES of the first rule that removes the row; len(RULES) for a clean row."""
    ranks = pl.when(RULES[0].flags(options).fill_null(True)).then(0)
    for rank, rule in enumerate(RULES[1:], start=1):
        ranks = ranks.when(rule.flags(options).fill_null(True)).then(rank)
    return ranks.otherwise(len(RULES)).cast(pl.UInt8).alias(RANK)


def repeated_rows(numbered: pl.LazyFrame) -> pl.Series:
    """Source rows of the lines that repeat an earlier line in every column.

    Rules before exact_duplicate look at one row at a time, so they treat copies alike, and copies
    among all lines are copies among the lines those rules leave. Row hashes find the candidates
    in one pass over little memory; only lines whose hash repeats are compared in full.
    """
    columns = [name for name in numbered.collect_schema().names() if name != SOURCE_ROW]
    hashes = numbered.select(SOURCE_ROW, pl.struct(columns).hash().alias("hash")).collect(engine="streaming")
    repeated_hashes = hashes.lazy().group_by("hash").len().filter(pl.col("len") > 1).collect(engine="streaming")
    candidates = hashes.filter(pl.col("hash").is_in(repeated_hashes["hash"].implode()))[SOURCE_ROW]
    return (numbered.filter(pl.col(SOURCE_ROW).is_in(candidates.implode()))
            .collect(engine="streaming")
            .sort(SOURCE_ROW)
            .filter(~pl.struct(columns).is_first_distinct())[SOURCE_ROW])


def funnel_of(tallies: Sequence[RankTally]) -> CleaningFunnel:
    """The funnel of all tallied lines; a customer is left after a rule while one of their lines got past it."""
    rows_per_rank = [sum(rows) for rows in zip(*(tally.rows_per_rank for tally in tallies))]
    furthest = (pl.concat([tally.furthest_rank for tally in tallies])
                .group_by("CustomerID").agg(pl.col(RANK).max())[RANK])
    outcomes = tuple(RuleOutcome(rule.name, rule.description, rows_per_rank[rank], int((furthest > rank).sum()))
                     for rank, rule in enumerate(RULES))
    return CleaningFunnel(raw_rows=sum(rows_per_rank), raw_customers=furthest.len(), outcomes=outcomes,
                          clean_rows=rows_per_rank[-1], clean_customers=outcomes[-1].customers_after)
