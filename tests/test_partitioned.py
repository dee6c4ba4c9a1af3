"""Partitioned mode: cleaning by file and customer partition equals cleaning the concatenated input, and the
flow on a 2-worker Dask LocalCluster gives the features, cleaning and segments of customer-segmentation."""

import contextlib
import json
from datetime import date, datetime
from pathlib import Path

import polars as pl
import psutil
import pytest
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from schemas import CustomerFeatures
from tasks import clean, features, ingest, partition
from tasks.clean import SOURCE_ROW, CleaningOptions
from tasks.errors import InputError
from tasks.generate import generate_transactions
from tests.conftest import invoice_lines
from tests.ingest_samples import LINES, by_month, dated_lines
from tests.xlsx_writer import write_xlsx

OPTIONS = CleaningOptions(latest_plausible_date=datetime(2030, 1, 1))


def clean_in_partitions(files: list[pl.DataFrame], partitions: int) -> partition.MergedCleaning:
    """What the partitioned flow does, in-process: guests out per file, the rest cleaned per customer partition."""
    offsets = partition.file_offsets([file.height for file in files])
    screened = [partition.split_guests(partition.numbered_lines(file, index), OPTIONS) for index, file in enumerate(files)]
    customer_lines = pl.concat([lines for lines, _ in screened])
    cleaned = [partition.clean_partition(lines, offsets, OPTIONS)
               for lines in partition.by_partition(customer_lines, partitions).values()]
    guests = partition.numbered_guests(pl.concat([guests for _, guests in screened]), offsets)
    funnel = partition.merged_funnel([file.height for file in files], guests.height,
                                     [part.funnel for part in cleaned])
    return partition.MergedCleaning(funnel, pl.concat([guests, *(part.quarantine for part in cleaned)]).sort(SOURCE_ROW))


def assert_same_cleaning(merged: partition.MergedCleaning, single: clean.CleanedTransactions) -> None:
    assert merged.quality() == single.quality()
    assert_frame_equal(merged.quarantine, single.quarantine.with_columns(pl.col(SOURCE_ROW).cast(pl.UInt64)))


@pytest.mark.parametrize("partitions", [1, 2, 5])
def test_a_line_repeated_in_a_later_file_is_its_duplicate_and_the_first_copy_stays(partitions):
    january = invoice_lines(
        ("536365", "85123A", 6, "2011-01-04 08:26", 2.55, 17850),
        ("536366", "71053", 6, "2011-01-04 08:28", 3.39, None),
        ("536367", "84406B", 8, "2011-01-05 09:00", 2.75, 13047),
    )
    february = invoice_lines(
        ("536365", "85123A", 6, "2011-01-04 08:26", 2.55, 17850),  # re-exported with January's invoice
        ("536400", "22752", 2, "2011-02-01 10:00", 7.65, 13047),
        ("C536401", "22752", -1, "2011-02-02 10:00", 7.65, 13047),
    )
    merged = clean_in_partitions([january, february], partitions)
    assert merged.quarantine.select(SOURCE_ROW, "rule").rows() == [
        (1, "missing_customer_id"), (3, "exact_duplicate"), (5, "cancellation")]
    assert_same_cleaning(merged, clean.clean_transactions(pl.concat([january, february]), OPTIONS))


@pytest.mark.parametrize("partitions", [1, 4, 7])
def test_cleaning_files_and_partitions_apart_equals_cleaning_them_together(partitions):
    lines = generate_transactions(20_000, seed=3).transactions
    duplicated_across_files = lines.filter(pl.col("CustomerID").is_not_null()).head(40)
    files = [lines.slice(0, 7_000), lines.slice(7_000, 6_000), pl.concat([lines.slice(13_000), duplicated_across_files])]
    merged = clean_in_partitions(files, partitions)
    single = clean.clean_transactions(pl.concat(files), OPTIONS)
    assert merged.quarantine.filter(pl.col(SOURCE_ROW) >= lines.height)["rule"].unique().to_list() == ["exact_duplicate"]
    assert_same_cleaning(merged, single)


def test_customer_partitions_are_stable_balanced_and_disjoint():
    ids = pl.Series("CustomerID", range(12_346, 22_346))
    # Pinned (worked out with Python integers): the same on every worker and with every Polars or NumPy version.
    assert partition.partition_of(ids.head(6), 4).to_list() == [0, 2, 3, 1, 2, 0]
    sizes = partition.partition_of(ids, 8).value_counts()["count"]
    assert sizes.len() == 8 and sizes.min() > 0.9 * 1_250 and sizes.max() < 1.1 * 1_250
    lines = invoice_lines(*[("1", "A", 1, "2011-01-01 10:00", 1.0, customer) for customer in (5, 6, 5, 7, 6, 5)])
    split = partition.by_partition(lines, 3)
    assert sum(part.height for part in split.values()) == lines.height
    customers = [set(part["CustomerID"]) for part in split.values()]
    assert sum(map(len, customers)) == len(set().union(*customers))


def test_merged_fingerprint_is_the_fingerprint_of_the_files_read_as_one_input(tmp_path):
    for month in (1, 2, 3):
        invoice_lines(("1", "A", month, f"2011-0{month}-01 10:00", 1.0, 1)).write_parquet(tmp_path / f"m{month}.parquet")
    files = sorted(str(path) for path in tmp_path.glob("*.parquet"))
    merged = ingest.merged_fingerprint(str(tmp_path), [ingest.load_transactions(name).fingerprint for name in files])
    assert merged == ingest.load_transactions(tmp_path).fingerprint
    one = ingest.merged_fingerprint(files[0], [ingest.load_transactions(files[0]).fingerprint])
    assert one == ingest.load_transactions(files[0]).fingerprint


def test_default_snapshot_over_partitions_is_the_one_features_take_over_all_lines():
    lines = invoice_lines(("1", "A", 1, "2011-03-01 10:00", 1.0, 1), ("2", "A", 1, "2011-12-09 19:59", 1.0, 2))
    returns = lines.clear()
    assert partition.default_snapshot([datetime(2011, 3, 1, 10), None, datetime(2011, 12, 9, 19, 59)]) == date(2011, 12, 10)
    whole = features.build_features(lines, returns)
    assert whole.filter(pl.col("CustomerID") == 2)["Recency"].item() == 1


def test_an_input_without_any_customer_is_refused():
    with pytest.raises(InputError, match="no line has a CustomerID"):
        partition.merged_funnel([3], 3, []).require_customers()


def test_parameters_need_a_work_folder_the_workers_share_for_an_s3_target():
    from flows.partitioned import PartitionedParameters

    with pytest.raises(ValidationError, match="work_dir is needed"):
        PartitionedParameters(input="exports/", target="s3://bucket/segments")
    with pytest.raises(ValidationError, match="a folder on a disk"):
        PartitionedParameters(input="exports/", work_dir="s3://bucket/work")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        PartitionedParameters(input="exports/", partitions=0)
    assert PartitionedParameters(input="exports/", target="s3://bucket/segments", work_dir="/shared/work").partitions == 16


@pytest.mark.parametrize("flag", ["streaming", "demo_lines"])
def test_parameters_offer_no_flag_a_partitioned_run_ignores(flag):
    from flows.partitioned import PartitionedParameters

    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PartitionedParameters(input="exports/", **{flag: False if flag == "streaming" else 5_000})


def test_local_input_files_are_handed_to_the_workers_by_absolute_path_and_fingerprinted_by_name(tmp_path, monkeypatch):
    from flows.partitioned import InputFile, list_input_files
    from tasks.publish import S3Settings

    (tmp_path / "exports").mkdir()
    for month in ("2011-01", "2011-02"):
        LINES.write_parquet(tmp_path / "exports" / f"{month}.parquet")
    monkeypatch.chdir(tmp_path)
    assert list_input_files.fn("exports/*.parquet", S3Settings()) == [
        InputFile(str(tmp_path / "exports" / f"{month}.parquet"), f"exports/{month}.parquet")
        for month in ("2011-01", "2011-02")]


# --- the flow on a Dask LocalCluster against customer-segmentation -------------------------


@pytest.fixture(scope="module")
def monthly_files(tmp_path_factory) -> str:
    """A glob of 13 monthly Parquet exports of 120k generated lines; the last repeats some lines of the first."""
    folder = tmp_path_factory.mktemp("monthly")
    lines = generate_transactions(120_000, seed=11).transactions
    months = lines.with_columns(pl.col("InvoiceDate").dt.strftime("%Y-%m").alias("month")).partition_by(
        "month", as_dict=True, include_key=False)
    names = sorted(month for (month,) in months)
    for month in names:
        export = months[(month,)]
        if month == names[-1]:  # an overlapping export: lines of the first month sent again
            export = pl.concat([export, months[(names[0],)].head(50)])
        export.write_parquet(folder / f"lines-{month}.parquet")
    return str(folder / "lines-*.parquet")


@pytest.fixture(scope="module")
def both_runs(monthly_files, tmp_path_factory, prefect_server):
    """The single-process run and the partitioned run (2 Dask workers) of the same files, and leftover processes."""
    from flows.parameters import SegmentationParameters
    from flows.partitioned import PartitionedParameters, customer_segmentation_partitioned
    from flows.segmentation import customer_segmentation

    target = tmp_path_factory.mktemp("artifacts")
    shared = {"input": monthly_files, "target": str(target), "retries": 0, "refresh_cache": True}  # both compute all
    single = customer_segmentation(SegmentationParameters(run_id="single", **shared), return_state=True)
    workers_before = spawned_processes()
    partitioned = customer_segmentation_partitioned(
        PartitionedParameters(run_id="partitioned", partitions=4, dask_workers=2, **shared), return_state=True)
    left_over = spawned_processes() - workers_before
    assert single.is_completed(), single.message
    assert partitioned.is_completed(), partitioned.message
    return target / "runs" / "single", target / "runs" / "partitioned", left_over, target


def spawned_processes() -> set[int]:
    """Running processes that this one started through multiprocessing's spawn, as LocalCluster starts its workers."""
    spawned = set()
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # it may end while we look
            if "spawn_main" in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                spawned.add(process.pid)
    return spawned


def test_the_partitioned_run_used_two_dask_workers_closed_them_and_removed_its_work_files(both_runs):
    _, partitioned, left_over, target = both_runs
    metrics = json.loads((partitioned / "manifest.json").read_text())["metrics"]
    assert metrics["dask_workers"] == 2 and metrics["dask_worker_peak_rss_mib"] > 0
    assert not left_over
    assert not (target / "work" / "partitioned").exists()


def test_features_are_identical_row_for_row(both_runs):
    single, partitioned, _, _ = both_runs
    columns = list(CustomerFeatures.to_schema().columns)
    expected = pl.read_parquet(single / "segments.parquet").select(columns).sort("CustomerID")
    assert expected.height > 1_000
    # Exactly: money is summed as decimals, which no order of summation changes.
    assert_frame_equal(pl.read_parquet(partitioned / "segments.parquet").select(columns).sort("CustomerID"), expected,
                       check_exact=True)


def test_cleaning_counts_and_quarantine_are_identical(both_runs):
    single, partitioned, _, _ = both_runs
    quality = json.loads((single / "quality.json").read_text())
    assert json.loads((partitioned / "quality.json").read_text()) == quality
    assert {rule["rule"]: rule["removed_rows"] for rule in quality["rules"]}["exact_duplicate"] >= 50
    expected = pl.read_parquet(single / "quarantine.parquet").with_columns(pl.col(SOURCE_ROW).cast(pl.UInt64))
    assert_frame_equal(pl.read_parquet(partitioned / "quarantine.parquet"), expected)


def test_segments_and_input_fingerprint_are_identical(both_runs):
    single, partitioned, _, _ = both_runs
    segments = [pl.read_parquet(run / "segments.parquet").sort("CustomerID") for run in (single, partitioned)]
    assert_frame_equal(segments[1].select("CustomerID", "cluster", "segment", "segment_name"),
                       segments[0].select("CustomerID", "cluster", "segment", "segment_name"))
    # The risk score ranks Amount, where customers tied in one run may differ in the last bit in the other, so
    # scores move by a rank or two and only a customer right at a cut (1/3, 2/3) may change risk band.
    assert_frame_equal(segments[1].select("risk_score"), segments[0].select("risk_score"), abs_tol=0.01)
    clear_of_cuts = segments[0].filter(((pl.col("risk_score") - 1 / 3).abs() > 0.01)
                                       & ((pl.col("risk_score") - 2 / 3).abs() > 0.01)).select("CustomerID")
    assert clear_of_cuts.height > 0.9 * segments[0].height
    bands = [clear_of_cuts.join(run.select("CustomerID", "risk"), on="CustomerID") for run in segments]
    assert_frame_equal(bands[1], bands[0])
    manifests = [json.loads((run / "manifest.json").read_text()) for run in (single, partitioned)]
    assert manifests[0]["input"] == manifests[1]["input"]
    assert manifests[0]["counts"] == manifests[1]["counts"]
    assert manifests[1]["metrics"]["segments"] >= 4


@pytest.mark.slow
@pytest.mark.parametrize(("guests_only", "countries", "message"), [
    (True, [], "no line has a CustomerID"),
    (False, ["Atlantis"], "Cleaning left no customer to segment: rule country_not_selected"),
], ids=["guests only", "no customer of the countries"])
def test_an_input_without_customers_to_segment_fails_with_the_reason(guests_only, countries, message, tmp_path,
                                                                      prefect_server):
    from flows.partitioned import PartitionedParameters, customer_segmentation_partitioned

    lines = generate_transactions(5_000, seed=3).transactions
    if guests_only:
        lines = lines.with_columns(pl.lit(None, dtype=lines["CustomerID"].dtype).alias("CustomerID"))
    lines.write_parquet(tmp_path / "lines.parquet")
    state = customer_segmentation_partitioned(PartitionedParameters(
        input=str(tmp_path / "*.parquet"), target=str(tmp_path / "out"), countries=countries, dask_workers=1,
        partitions=2, retries=0), return_state=True)
    assert state.is_failed()
    assert message in state.message and "InputError" in state.message


def run_partitioned(input: Path, target: Path):
    """customer-segmentation-partitioned on one Dask worker, without retries; its final state."""
    from flows.partitioned import PartitionedParameters, customer_segmentation_partitioned

    return customer_segmentation_partitioned(PartitionedParameters(
        input=str(input), target=str(target), dask_workers=1, partitions=2, retries=0), return_state=True)


@pytest.mark.slow
def test_a_month_whose_dates_read_both_ways_takes_the_order_the_other_months_settle(tmp_path, prefect_server):
    # As the UCI data split by month, in the CSV copy's US dates: December 2011 ends on the 7th.
    lines = generate_transactions(5_000, seed=3).transactions
    (tmp_path / "months").mkdir()
    for month, month_lines in by_month(lines).items():
        month_lines.with_columns(pl.col("InvoiceDate").dt.strftime("%m/%d/%Y %H:%M")).write_csv(
            tmp_path / "months" / f"{month}.csv")
    with pytest.raises(ingest.AmbiguousDates):
        ingest.load_transactions(tmp_path / "months" / "2011-12.csv")
    state = run_partitioned(tmp_path / "months", tmp_path / "out")
    assert state.is_completed(), state.message
    # The features customer-segmentation's ingest, cleaning and features give the same files.
    cleaned = clean.clean_transactions(ingest.load_transactions(tmp_path / "months").transactions)
    expected = features.build_features(cleaned.lines, cleaned.returns)
    assert expected["Recency"].min() == 1  # the last invoice, on 7 December, is the day before the snapshot
    run = next((tmp_path / "out" / "runs").iterdir())
    columns = list(CustomerFeatures.to_schema().columns)
    assert_frame_equal(pl.read_parquet(run / "segments.parquet").select(columns).sort("CustomerID"),
                       expected.select(columns).sort("CustomerID"), check_exact=True)


def october_and_a_workbook_settling_its_own_december_the_other_way(folder: Path) -> None:
    # December reads both ways, November day-first only, but October month-first only.
    dated_lines("%m/%d/%Y %H:%M", 10, [3, 14, 28]).write_csv(folder / "2011-10.csv")
    write_xlsx(folder / "2011-11-12.xlsx", {"November": dated_lines("%d/%m/%Y %H:%M", 11, [2, 17, 30]),
                                            "December": dated_lines("%d/%m/%Y %H:%M", 12, [1, 5, 9])})


def months_without_a_day_after_the_12th(folder: Path) -> None:
    dated_lines("%d/%m/%Y %H:%M", 11, [2, 7, 12]).write_csv(folder / "2011-11.csv")
    dated_lines("%d/%m/%Y %H:%M", 12, [1, 5, 9]).write_csv(folder / "2011-12.csv")


@pytest.mark.slow
@pytest.mark.parametrize("write_exports", [october_and_a_workbook_settling_its_own_december_the_other_way,
                                           months_without_a_day_after_the_12th])
def test_dates_the_whole_input_does_not_settle_are_refused_as_segments_run_refuses_them(write_exports, tmp_path,
                                                                                         prefect_server):
    (tmp_path / "exports").mkdir()
    write_exports(tmp_path / "exports")
    with pytest.raises(ingest.AmbiguousDates) as single_process:
        ingest.load_transactions(tmp_path / "exports")
    state = run_partitioned(tmp_path / "exports", tmp_path / "out")
    assert state.is_failed()
    assert f"AmbiguousDates: {single_process.value}" in state.message


def test_the_task_runner_is_the_scheduler_given_or_a_local_cluster_of_the_workers_asked_for():
    from flows.partitioned import PartitionedParameters, dask_task_runner

    remote = dask_task_runner(PartitionedParameters(input="exports/", dask_address="tcp://10.0.0.5:8786"))
    assert (remote.address, remote.cluster_kwargs) == ("tcp://10.0.0.5:8786", {})
    local = dask_task_runner(PartitionedParameters(input="exports/", dask_workers=3))
    assert local.address is None
    assert (local.cluster_kwargs["n_workers"], local.cluster_kwargs["threads_per_worker"]) == (3, 1)
