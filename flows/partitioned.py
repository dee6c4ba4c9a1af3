"""The `customer-segmentation-partitioned` flow: customer-segmentation for inputs of many files, on Dask.

```
files ─► ingest + guests out ─► lines by CustomerID hash ─► clean ─► features ─► cluster ─► report ─► publish
         one task per file      Parquet in the work folder   one task per partition   (as customer-segmentation)
```

File and partition tasks run on the workers of a Dask cluster through prefect-dask, each with
Polars inside; they pass each other paths in a work folder every worker can reach, not frames.
tasks/partition.py explains why cleaning by file, then by customer partition, gives exactly the
single-process result. Text dates that read both day-first and month-first take the order the
whole input settles, as in customer-segmentation: a file that holds such dates is read again once
every file's dates have been scanned for that order. Features of a customer depend only on their
own lines and the snapshot date, so with one global snapshot each partition's features are exact.
Clustering, the report and publishing run in the flow's process on the assembled feature table,
one row per customer.
"""

import os
import shutil
import time
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task, unmapped
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from flows.parameters import PartitionedParameters
from flows.segmentation import (
    RunSummary, clustering_options, contract_failures_published, fit_segments, log_stage, new_run_id,
    finish_run, publish_run, render_report, stage_options,
)
from tasks import features, ingest, partition, sources
from tasks.clean import CleaningFunnel, CleaningOptions
from tasks.ingest import InputFingerprint
from tasks.memory import resident_memory
from tasks.publish import S3Settings


@dataclass(frozen=True)
class WorkFolder:
    """The run's intermediate Parquet files, in a folder every Dask worker can read and write."""

    root: Path

    def guests(self, file_index: int) -> Path:
        """The lines of one file without a CustomerID, already quarantined."""
        return self.root / "guests" / f"file-{file_index:06d}.parquet"

    def screened(self, partition_number: int, file_index: int | None = None) -> Path:
        """One file's lines of a customer partition; without a file index, the partition's folder of them."""
        folder = self.root / "lines" / f"part-{partition_number:05d}"
        return folder if file_index is None else folder / f"file-{file_index:06d}.parquet"

    def cleaned(self, partition_number: int, part: str) -> Path:
        """A customer partition's clean `lines`, `returns` or `quarantine`."""
        return self.root / "clean" / f"part-{partition_number:05d}" / f"{part}.parquet"

    def features(self, partition_number: int) -> Path:
        """The CustomerFeatures of a customer partition."""
        return self.root / "features" / f"part-{partition_number:05d}.parquet"


@dataclass(frozen=True)
class InputFile:
    """One file of the input: where every Dask worker reads it, and the name the input's fingerprint lists it by."""

    location: str  # an absolute path, an s3:// object or an http(s) URL
    name: str  # as ingest of the whole input names it: a path as given, relative or not


@dataclass(frozen=True)
class ScreenedFile:
    """What the task of one input file found: its rows, its guest lines and the partitions its customers fall in."""

    fingerprint: InputFingerprint
    rows: int
    guest_rows: int
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class UnsettledFile:
    """An input file left unread because its text dates read both day-first and month-first."""

    ambiguity: ingest.AmbiguousDates


@dataclass(frozen=True)
class CleanedPartition:
    """What cleaning one customer partition found: its funnel and when its last clean line was invoiced."""

    funnel: CleaningFunnel
    last_invoice: datetime | None


# --- the stages --------------------------------------------------------------------------


@task(name="list-files")
def list_input_files(source: str, s3: S3Settings) -> list[InputFile]:
    """The input's files in name order, as ingest would read them; each file task fetches its own.

    Local paths are made absolute here, in the flow's process: a worker on another machine has another working folder.
    """
    return [InputFile(location if "://" in location else str(Path(location).resolve()), location)
            for location in sources.listed_files(source, ingest.SUFFIXES, s3)]


@task(name="ingest-file")
def screen_file(file: InputFile, file_index: int, column_mapping: dict[str, str], partitions: int,
                options: CleaningOptions, work: WorkFolder, s3: S3Settings,
                day_first: bool | None = None) -> ScreenedFile | UnsettledFile:
    """Ingest one file, quarantine its guest lines and write the others by customer partition.

    Text dates that read both day-first and month-first take `day_first`'s order; without one, the file is
    left unsettled, for the order the whole input settles.
    """
    started = time.perf_counter()
    name = sources.shown_location(file.name)
    try:
        loaded = ingest.load_transactions(file.location, column_mapping, s3=s3, day_first=day_first,
                                          settle_day_month=False)
    except ingest.AmbiguousDates as ambiguity:
        log_stage("ingest-file", started, file=name, day_month="unsettled")
        return UnsettledFile(ambiguity)
    lines, guests = partition.split_guests(partition.numbered_lines(loaded.transactions, file_index), options)
    write_parquet(guests, work.guests(file_index))
    by_partition = partition.by_partition(lines, partitions)
    for partition_number, part in by_partition.items():
        write_parquet(part, work.screened(partition_number, file_index))
    log_stage("ingest-file", started, file=name, rows=loaded.transactions.height, guest_rows=guests.height)
    return ScreenedFile(replace(loaded.fingerprint, source=name), loaded.transactions.height, guests.height,
                        tuple(sorted(by_partition)))


@task(name="day-month-orders")
def day_month_orders(file: InputFile, column_mapping: dict[str, str], s3: S3Settings) -> frozenset[bool]:
    """The orders (True: day-first) in which the file's text dates read one way round only."""
    started = time.perf_counter()
    orders = ingest.day_month_orders(file.location, column_mapping, s3)
    log_stage("day-month-orders", started, file=sources.shown_location(file.name),
              orders=",".join("day-first" if day_first else "month-first" for day_first in sorted(orders)) or "none")
    return orders


@task(name="clean-partition")
def clean_partition(partition_number: int, offsets: list[int], options: CleaningOptions,
                    work: WorkFolder) -> CleanedPartition:
    """Clean one customer partition's lines, from every file, in source order."""
    started = time.perf_counter()
    lines = pl.read_parquet(work.screened(partition_number) / "*.parquet")
    with contract_failures_published("clean"):
        cleaned = partition.clean_partition(lines, offsets, options)
    for part, frame in {"lines": cleaned.lines, "returns": cleaned.returns, "quarantine": cleaned.quarantine}.items():
        write_parquet(frame, work.cleaned(partition_number, part))
    log_stage("clean-partition", started, partition=partition_number, raw_rows=cleaned.funnel.raw_rows,
              clean_rows=cleaned.funnel.clean_rows, quarantined_rows=cleaned.funnel.quarantined_rows)
    return CleanedPartition(cleaned.funnel, partition.last_invoice(cleaned.lines))


@task(name="features-partition")
def build_partition_features(partition_number: int, snapshot_date: date, work: WorkFolder) -> None:
    """The CustomerFeatures of one customer partition, as of the run's snapshot date."""
    started = time.perf_counter()
    with contract_failures_published("features"):
        customer_features = features.build_features(pl.scan_parquet(work.cleaned(partition_number, "lines")),
                                                    pl.scan_parquet(work.cleaned(partition_number, "returns")),
                                                    snapshot_date)
    write_parquet(customer_features, work.features(partition_number))
    log_stage("features-partition", started, partition=partition_number, customers=customer_features.height)


@task(name="assemble-features")
def assemble_features(partitions: list[int], work: WorkFolder) -> pl.DataFrame:
    """Every partition's features in one table, sorted by CustomerID as customer-segmentation's."""
    started = time.perf_counter()
    customer_features = pl.concat(pl.read_parquet(work.features(number)) for number in partitions).sort("CustomerID")
    log_stage("assemble-features", started, customers=customer_features.height)
    return customer_features


@task(name="merge-cleaning")
def merge_cleaning(screened: list[ScreenedFile], cleaned: list[CleanedPartition], partitions: list[int],
                   offsets: list[int], work: WorkFolder) -> partition.MergedCleaning:
    """The funnel and the quarantine of the whole input, in source-row order, from every file and partition."""
    started = time.perf_counter()
    funnel = partition.merged_funnel([file.rows for file in screened], sum(file.guest_rows for file in screened),
                                     [part.funnel for part in cleaned])
    funnel.require_customers()
    guests = partition.numbered_guests(pl.scan_parquet([work.guests(index) for index in range(len(screened))]), offsets)
    quarantine = pl.concat([guests, *(pl.scan_parquet(work.cleaned(number, "quarantine")) for number in partitions)])
    merged = partition.MergedCleaning(funnel, quarantine.sort(partition.SOURCE_ROW).collect(engine="streaming"))
    log_stage("merge-cleaning", started, raw_rows=funnel.raw_rows, clean_rows=funnel.clean_rows,
              quarantined_rows=merged.quarantine.height)
    return merged


# --- the flow ----------------------------------------------------------------------------


@flow(name="customer-segmentation-partitioned")
def customer_segmentation_partitioned(params: PartitionedParameters) -> RunSummary:
    """Find campaign-ready customer segments in many invoice-line files on a Dask cluster and publish them."""
    return segment_on_dask.with_options(task_runner=dask_task_runner(params))(params)


@flow(name="segment-on-dask")
def segment_on_dask(params: PartitionedParameters) -> RunSummary:
    """The partitioned pipeline; its mapped tasks run on the Dask workers of the flow's task runner."""
    run_id = params.run_id or new_run_id()
    options = stage_options(params)
    work = fresh_work_folder(params, run_id)
    rules = cleaning_options(params)
    files = list_input_files.with_options(**options)(params.input, params.s3_settings())
    screened = screen_files(files, params, rules, work, options)
    offsets = partition.file_offsets([file.rows for file in screened])
    partitions = partitions_with_lines(screened)
    cleaned = clean_partition.with_options(**options).map(partitions, unmapped(offsets), unmapped(rules),
                                                          unmapped(work)).result()
    # Before the snapshot and the features, which have nothing to work on when no customer is left.
    cleaning = merge_cleaning.with_options(**options)(screened, cleaned, partitions, offsets, work)
    snapshot_date = params.snapshot_date or partition.default_snapshot([part.last_invoice for part in cleaned])
    build_partition_features.with_options(**options).map(partitions, unmapped(snapshot_date), unmapped(work)).result()
    worker_metrics = dask_worker_metrics()
    customer_features = assemble_features.with_options(**options)(partitions, work)
    fingerprint = ingest.merged_fingerprint(params.input, [file.fingerprint for file in screened])
    segmentation = fit_segments.with_options(**options)(customer_features, clustering_options(params))
    run_files, manifest = render_report.with_options(**options)(
        run_id, params, fingerprint, cleaning, customer_features, segmentation, worker_metrics)
    published = publish_run.with_options(**options)(
        run_id, params.target, run_files, manifest, s3=params.s3_settings(),
        report_link_expiry_seconds=params.report_link_expiry_seconds,
    )
    shutil.rmtree(work.root)  # only once published: a failed run leaves its work files for a look
    return finish_run(
        run_id, cleaning.funnel.raw_rows, cleaning.funnel.clean_rows, cleaning.quarantine.height,
        customer_features.height, segmentation.profiles, published,
    )


def screen_files(files: list[InputFile], params: PartitionedParameters, rules: CleaningOptions, work: WorkFolder,
                 options: dict) -> list[ScreenedFile]:
    """Every file screened, in order. Files whose text dates read both day-first and month-first are read
    again with the order the whole input settles, or the first one's AmbiguousDates is raised if it
    settles none: as customer-segmentation's ingest of the same files does, so that both read them alike."""
    screen = screen_file.with_options(**options)
    shared = (unmapped(params.column_mapping), unmapped(params.partitions), unmapped(rules), unmapped(work),
              unmapped(params.s3_settings()))
    screened = screen.map(files, range(len(files)), *shared).result()
    unsettled = [index for index, file in enumerate(screened) if isinstance(file, UnsettledFile)]
    if not unsettled:
        return screened
    # Every file's orders, the unsettled files' own included: a workbook's other sheets count, as in one process.
    orders = day_month_orders.with_options(**options).map(files, unmapped(params.column_mapping),
                                                          unmapped(params.s3_settings())).result()
    day_first = ingest.settled_day_first(frozenset().union(*orders))
    if day_first is None:
        raise screened[unsettled[0]].ambiguity
    settled = screen.map([files[index] for index in unsettled], unsettled, *shared, unmapped(day_first)).result()
    for index, file in zip(unsettled, settled):
        screened[index] = file
    return screened


def dask_task_runner(params: PartitionedParameters) -> DaskTaskRunner:
    """A task runner on the Dask scheduler at params.dask_address, or on a local cluster started for the run."""
    if params.dask_address:
        return DaskTaskRunner(address=params.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": params.dask_workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": ":0",  # any free port: another cluster on the machine may hold 8787
            # One task at a time per worker, parallel inside through Polars: each takes its share of the cores.
            "env": {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // params.dask_workers))},
        },
    )


def cleaning_options(params: PartitionedParameters) -> CleaningOptions:
    """The cleaning parameters, with one "now" for every task so that all judge future dates alike."""
    return CleaningOptions(non_product_codes=tuple(params.non_product_codes), countries=tuple(params.countries),
                           latest_plausible_date=datetime.now())


def partitions_with_lines(screened: list[ScreenedFile]) -> list[int]:
    """The customer partitions some file has lines for, in order."""
    return sorted(set().union(*(file.partitions for file in screened)))


def fresh_work_folder(params: PartitionedParameters, run_id: str) -> WorkFolder:
    """The run's empty work folder; files of an earlier attempt with the same run id are removed."""
    root = Path(params.work_dir) / run_id if params.work_dir else Path(params.target) / "work" / run_id
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return WorkFolder(root.resolve())


def dask_worker_metrics() -> dict:
    """How many Dask workers ran the tasks and the highest peak resident memory among them (MiB)."""
    peaks = FlowRunContext.get().task_runner.client.run(peak_rss_mib)
    get_run_logger().info("stage=dask workers=%d peak_rss_mib=%s", len(peaks),
                          ",".join(f"{peak:.0f}" for peak in sorted(peaks.values())))
    return {"dask_workers": len(peaks), "dask_worker_peak_rss_mib": round(max(peaks.values()), 1)}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (on a worker: its own, over the worker's life)."""
    return resident_memory().peak_mib


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write a work file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
