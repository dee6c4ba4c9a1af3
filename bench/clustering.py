"""Customer tables for the clustering benchmark, and the clustering stage as a worker task.

1M customers would take about 87M generated invoice lines, too many to generate and clean for a
benchmark. Instead the customers of one generated run (its features, computed by the DuckDB
engine, which stays within memory at 50M lines) are the base: a smaller table is a random subset
of it, a larger one is all of it plus a smoothed bootstrap, customers drawn again with their
Recency and Tenure moved by the same few days and their spend by a few percent. The density
shape of the generator's archetypes is kept, and no two customers are the same point.
"""

from pathlib import Path

import numpy as np
import polars as pl

from bench.engines import run_duckdb
from bench.measure import Outcome
from tasks.cluster import ClusteringOptions, fit_segments

RECENCY_JITTER_DAYS = 7
AMOUNT_JITTER_SIGMA = 0.05  # of log spend: about ±5%
SEED = 11


def base_customers(transactions: Path) -> Path:
    """Features of every customer in a generated export, computed once next to it."""
    path = transactions.with_name("customers.parquet")
    if not path.is_file():
        run_duckdb(str(transactions)).table.write_parquet(path)
    return path


def customers_table(base: Path, customers: int) -> Path:
    """`customers` customers drawn from the base table (see the module docstring), written once next to it."""
    path = base.with_name(f"customers-{customers}.parquet")
    if not path.is_file():
        drawn = draw_customers(pl.read_parquet(base), customers, np.random.default_rng(SEED))
        drawn.write_parquet(path)
    return path


def draw_customers(base: pl.DataFrame, customers: int, rng: np.random.Generator) -> pl.DataFrame:
    """A random subset of `base`, or all of it plus jittered redraws, renumbered 1..customers."""
    if customers <= base.height:
        drawn = base[np.sort(rng.choice(base.height, customers, replace=False))]
    else:
        drawn = pl.concat([base, jittered(base[rng.integers(0, base.height, customers - base.height)], rng)])
    return drawn.with_columns(pl.int_range(1, customers + 1, dtype=pl.Int64).alias("CustomerID"))


def jittered(customers: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """The customers with their history moved by a few days and their spend scaled by a few percent."""
    shift = rng.integers(-RECENCY_JITTER_DAYS, RECENCY_JITTER_DAYS + 1, customers.height)
    recency = np.maximum(customers["Recency"].to_numpy() + shift, 1)
    amount = customers["Amount"].to_numpy() * np.exp(rng.normal(0.0, AMOUNT_JITTER_SIGMA, customers.height))
    return customers.with_columns(
        pl.Series("Recency", recency),
        pl.Series("Tenure", np.maximum(customers["Tenure"].to_numpy() + shift, recency)),
        pl.Series("Amount", amount),
    ).with_columns((pl.col("Amount") / pl.col("FrequencyPurchase")).alias("AvgOrderValue"))


def run_clustering(path: str, fit_sample: int | None) -> Outcome:
    """The clustering stage on a customer table; its table is every customer's cluster and segment."""
    segmentation = fit_segments(pl.read_parquet(path), ClusteringOptions(fit_sample=fit_sample))
    summary = {**segmentation.metrics, "eps": segmentation.eps, "customers": segmentation.assignments.height}
    return Outcome(summary, segmentation.assignments.select("CustomerID", "cluster", "segment"))
