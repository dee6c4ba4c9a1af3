"""Partitioned cleaning: clean many files apart, by file and then by customer, with the single-process result.

Cleaning's rules (tasks.clean.RULES) each remove rows among those the rules before them left, so a
row is attributed to the first rule that catches it. The first rule, missing_customer_id, looks at
one row at a time, so it runs per input file. Every later rule either looks at one row too or,
exact_duplicate, compares a line with the earlier lines in every column, CustomerID included, so a
line and its duplicates always share a customer. Hence, once the lines with a CustomerID are split
by a hash of it, each customer partition can run all the rules on its own, in source-row order,
and gets exactly what one process gets on the concatenated input: the same rows removed by the
same rules, and the same first copy of a duplicate kept. Partitions share no customer, so
customer counts add up across them.

Lines carry their file's index and their row within the file; files are numbered in name order,
as ingest reads them, so the global source row is the file's offset (the rows of the files
before it) plus the row within the file.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from itertools import accumulate

import numpy as np
import polars as pl

from tasks import clean, features
from tasks.clean import RULE, SOURCE_ROW, CleanedTransactions, CleaningFunnel, CleaningOptions, RuleOutcome

FILE_INDEX = "file_index"
FILE_ROW = "file_row"
# Fibonacci hashing: multiplying by 2**64 / golden ratio spreads consecutive and patterned ids evenly,
# and unlike Polars' hash it is the same on every machine and in every version, so workers agree.
_GOLDEN_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)

Frame = pl.DataFrame | pl.LazyFrame


@dataclass(frozen=True)
class MergedCleaning:
    """Cleaning of every file and partition as the report reads it: the funnel and the quarantine, no clean lines."""

    funnel: CleaningFunnel
    quarantine: pl.DataFrame  # raw columns + source_row + rule, in source-row order

    def quality(self) -> dict:
        """The funnel as quality.json has it."""
        return self.funnel.quality()


def numbered_lines(lines: pl.DataFrame, file_index: int) -> pl.DataFrame:
    """The lines of one file with its index and each line's row within it (from 0)."""
    return lines.with_row_index(FILE_ROW).with_columns(pl.lit(file_index, dtype=pl.UInt32).alias(FILE_INDEX))


def split_guests(lines: pl.DataFrame, options: CleaningOptions) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The lines that have a CustomerID, and the others quarantined by the first rule, missing_customer_id."""
    guest_rule = clean.RULES[0]
    is_guest = guest_rule.flags(options).fill_null(True)
    guests = lines.filter(is_guest).with_columns(pl.lit(guest_rule.name).alias(RULE))
    return lines.filter(~is_guest), guests


def partition_of(customer_ids: pl.Series, partitions: int) -> pl.Series:
    """The customer partition, 0 to partitions - 1, of each (non-null) CustomerID."""
    mixed = customer_ids.to_numpy().astype(np.uint64) * _GOLDEN_MULTIPLIER
    return pl.Series((mixed >> np.uint64(32)) % np.uint64(partitions)).cast(pl.UInt32)


def by_partition(lines: pl.DataFrame, partitions: int) -> dict[int, pl.DataFrame]:
    """The lines (all with a CustomerID) split by customer partition; partitions without lines are left out."""
    return {
        partition: group
        for (partition,), group in lines.group_by(partition_of(lines["CustomerID"], partitions), maintain_order=True)
    }


def file_offsets(file_rows: Sequence[int]) -> list[int]:
    """Global source row of each file's first line: the rows of the files before it."""
    return [0, *accumulate(file_rows)][:-1]


def source_row(offsets: Sequence[int]) -> pl.Expr:
    """The global source row of a line: its file's offset plus its row within the file."""
    offset = pl.col(FILE_INDEX).replace_strict(range(len(offsets)), offsets, return_dtype=pl.UInt64)
    return (offset + pl.col(FILE_ROW)).alias(SOURCE_ROW)


def clean_partition(lines: pl.DataFrame, offsets: Sequence[int], options: CleaningOptions) -> CleanedTransactions:
    """Every cleaning rule on one customer partition's numbered lines, in source order; the quarantine keeps global rows."""
    ordered = lines.sort(FILE_INDEX, FILE_ROW)
    global_rows = ordered.select(source_row(offsets)).to_series()
    # clean_transactions numbers the rows it gets from 0; the numbered columns would make every line distinct.
    cleaned = clean.clean_transactions(ordered.drop(FILE_INDEX, FILE_ROW), options)
    quarantine = cleaned.quarantine.with_columns(global_rows.gather(cleaned.quarantine[SOURCE_ROW]))
    return replace(cleaned, quarantine=quarantine)


def numbered_guests(guests: Frame, offsets: Sequence[int]) -> Frame:
    """Guest lines quarantined per file, numbered by global source row, in the quarantine's column order."""
    raw_columns = [name for name in guests.collect_schema().names() if name not in (FILE_INDEX, FILE_ROW, RULE)]
    return guests.select(source_row(offsets), *raw_columns, RULE)


def merged_funnel(file_rows: Sequence[int], guest_rows: int, partitions: Sequence[CleaningFunnel]) -> CleaningFunnel:
    """The funnel of the whole input: rows summed, guests added to the first rule, customers summed over partitions.

    Without partitions (no line has a CustomerID) it has no customers, which require_customers refuses.
    """
    outcomes = tuple(
        RuleOutcome(
            rule=same_rule[0].rule, description=same_rule[0].description,
            removed_rows=sum(outcome.removed_rows for outcome in same_rule) + (guest_rows if position == 0 else 0),
            customers_after=sum(outcome.customers_after for outcome in same_rule),
        )
        for position, same_rule in enumerate(zip(*(funnel.outcomes for funnel in partitions)))
    )
    return CleaningFunnel(
        raw_rows=sum(file_rows), raw_customers=sum(funnel.raw_customers for funnel in partitions), outcomes=outcomes,
        clean_rows=sum(funnel.clean_rows for funnel in partitions),
        clean_customers=sum(funnel.clean_customers for funnel in partitions),
    )


def last_invoice(lines: Frame) -> datetime | None:
    """When the last of the lines was invoiced; None without lines."""
    return lines.lazy().select(pl.col("InvoiceDate").max()).collect().item()


def default_snapshot(last_invoices: Sequence[datetime | None]) -> date:
    """The snapshot build_features defaults to on all the lines together, from each partition's last invoice."""
    return pl.DataFrame({"LastPurchase": last_invoices}).select(features.snapshot(None)).item()
