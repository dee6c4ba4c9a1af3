"""Benchmark inputs: the real export and generated ones, written once to a cache outside the repository."""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tasks.generate import write_generated

REPOSITORY = Path(__file__).resolve().parents[1]
REAL_DATA = REPOSITORY.parent / "shared" / "data" / "online_retail.parquet"
# Outside the work tree, so generated gigabytes are never committed; BENCH_DATA_DIR moves it.
DEFAULT_CACHE = Path(os.environ.get("BENCH_DATA_DIR", Path.home() / ".cache" / "retail-segments-bench"))
GENERATOR_SEED = 7


@dataclass(frozen=True)
class BenchInput:
    """One file the pipelines read, named for the results table."""

    name: str
    path: Path
    lines: int


def real_input() -> BenchInput | None:
    """The real Online Retail export, if the shared data is there."""
    if not REAL_DATA.is_file():
        return None
    return BenchInput("real parquet", REAL_DATA, pl.scan_parquet(REAL_DATA).select(pl.len()).collect().item())


def generated_inputs(n_lines: int, cache: Path = DEFAULT_CACHE) -> list[BenchInput]:
    """Parquet and CSV copies of n_lines generated lines, generated on first use and reused after."""
    directory = cache / f"lines-{n_lines}-seed-{GENERATOR_SEED}"
    parquet, csv = directory / "transactions.parquet", directory / "transactions.csv"
    if not parquet.is_file():
        # Written aside and renamed when complete, so an interrupted run never leaves a truncated input.
        partial = directory.with_name(f"{directory.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_generated(partial, n_lines, seed=GENERATOR_SEED)
        partial.rename(directory)
    if not csv.is_file():
        partial = csv.with_suffix(".csv.partial")
        pl.scan_parquet(parquet).sink_csv(partial)
        partial.rename(csv)
    lines = pl.scan_parquet(parquet).select(pl.len()).collect().item()
    label = f"{n_lines / 1e6:g}M generated"
    return [BenchInput(f"{label} parquet", parquet, lines), BenchInput(f"{label} csv", csv, lines)]


def monthly_files(parquet: BenchInput) -> BenchInput:
    """The generated lines split into one Parquet file per invoice month, beside the file, for the partitioned flow."""
    folder = parquet.path.parent / "monthly"
    if not folder.is_dir():
        partial = folder.with_name("monthly.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        lines = pl.scan_parquet(parquet.path)
        months = lines.select(pl.col("InvoiceDate").dt.strftime("%Y-%m").unique().sort()).collect().to_series()
        for month in months:
            lines.filter(pl.col("InvoiceDate").dt.strftime("%Y-%m") == month).sink_parquet(partial / f"{month}.parquet")
        partial.rename(folder)
    return BenchInput(parquet.name.replace("parquet", "monthly files"), folder, parquet.lines)
