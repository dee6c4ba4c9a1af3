"""Streaming mode: batches through Parquet files give exactly what the in-memory stages give."""

import tempfile

import polars as pl
import pytest

import tasks.clean

from flows.parameters import SegmentationParameters
from flows.segmentation import customer_segmentation
from tasks.clean import clean_in_batches, clean_transactions
from tasks.errors import ConfigurationError, InputError
from tasks.features import build_features
from tasks.generate import generate_transactions
from tasks.ingest import load_transactions, stage_transactions
from tests.full_disk import FULL_DISK, needs_a_full_disk


@pytest.fixture(scope="module")
def generated() -> pl.DataFrame:
    return generate_transactions(30_000, seed=11).transactions


def assert_same_cleaning(streamed, in_memory):
    assert streamed.lines.collect().equals(in_memory.lines)
    assert streamed.quarantine.collect().equals(in_memory.quarantine)
    assert streamed.quality() == in_memory.quality()


def test_cleaning_in_batches_equals_cleaning_in_memory(generated, tmp_path):
    in_memory = clean_transactions(generated)
    # An odd batch size puts copies of a duplicated line in different batches.
    streamed = clean_in_batches(generated.lazy(), tmp_path, batch_rows=3_001)
    assert len(list(tmp_path.glob("*/lines/*.parquet"))) == 10
    assert_same_cleaning(streamed, in_memory)
    assert in_memory.funnel.outcomes[2].removed_rows > 0  # the generator plants exact duplicates
    features = build_features(streamed.lines, streamed.returns)
    assert features.equals(build_features(in_memory.lines, in_memory.returns))


@needs_a_full_disk
def test_cleaning_in_batches_on_a_full_disk_names_the_folder_instead_of_failing_in_polars(generated, tmp_path,
                                                                                            monkeypatch):
    cleaned = tmp_path / "cleaned"
    (cleaned / "lines").mkdir(parents=True)
    (cleaned / "lines" / "000000.parquet").symlink_to(FULL_DISK)  # the first batch's clean lines
    monkeypatch.setattr(tasks.clean, "own_folder", lambda parent, prefix: cleaned)
    with pytest.raises(ConfigurationError) as raised:
        clean_in_batches(generated.lazy(), tmp_path)
    assert str(raised.value).startswith(f"Cleaning: no room to write its batches of lines in {cleaned} (")
    assert "No space left on device" in str(raised.value) and "set TMPDIR" in str(raised.value)


def test_the_real_data_staged_and_cleaned_in_batches(real_data, tmp_path):
    staged = stage_transactions(real_data, tmp_path / "raw", batch_rows=100_000)
    streamed = clean_in_batches(staged.transactions, tmp_path / "clean", batch_rows=100_000)
    assert_same_cleaning(streamed, clean_transactions(load_transactions(real_data).transactions))
    assert streamed.funnel.outcomes[2].removed_rows == 5_225


def test_staged_csv_equals_csv_read_whole(generated, tmp_path):
    export = tmp_path / "export.csv"
    generated.write_csv(export)
    staged = stage_transactions(export, tmp_path / "staged", batch_rows=4_000)
    whole = load_transactions(export)
    assert staged.fingerprint == whole.fingerprint and staged.rows == generated.height
    assert staged.transactions.collect().equals(whole.transactions)


def test_a_bad_value_in_a_late_batch_is_named_by_its_row_in_the_file(tmp_path):
    lines = generate_transactions(5_000, seed=3).transactions.with_columns(pl.col("Quantity").cast(pl.String))
    bad_row = 4_321  # counted from 0 among the data rows
    lines = lines.with_columns(pl.when(pl.int_range(pl.len()) == bad_row).then(pl.lit("lots"))
                               .otherwise(pl.col("Quantity")).alias("Quantity"))
    export = tmp_path / "export.csv"
    lines.write_csv(export)
    with pytest.raises(InputError) as error:
        stage_transactions(export, tmp_path / "staged", batch_rows=1_000)
    message = str(error.value)
    assert "export.csv" in message and "'lots' (row 4,322)" in message and "rows 4,001 to 5,000" in message


def test_a_date_format_the_first_batch_rules_out_is_refused_by_row(tmp_path):
    dates = ["01/13/2011 10:00"] * 3 + ["25/02/2011 10:00"]  # month-first fits the first batch only
    lines = generate_transactions(1_000, seed=3).transactions.head(4).with_columns(
        pl.Series("InvoiceDate", dates))
    export = tmp_path / "export.csv"
    lines.write_csv(export)
    with pytest.raises(InputError, match=r"format %m/%d/%Y %H:%M that the column's first rows have.*'25/02/2011 10:00' \(row 4\)"):
        stage_transactions(export, tmp_path / "staged", batch_rows=3)


def test_a_first_batch_whose_dates_read_both_ways_takes_the_order_later_batches_settle(tmp_path):
    dates = ["02/01/2011 10:00", "03/01/2011 10:00", "25/01/2011 10:00", "30/01/2011 10:00"]  # day-first
    lines = generate_transactions(1_000, seed=3).transactions.head(4).with_columns(pl.Series("InvoiceDate", dates))
    export = tmp_path / "export.csv"
    lines.write_csv(export)
    staged = stage_transactions(export, tmp_path / "staged", batch_rows=2).transactions.collect()
    assert staged["InvoiceDate"].dt.day().to_list() == [2, 3, 25, 30]
    assert staged.equals(load_transactions(export).transactions)
    assert len(list((tmp_path / "staged").iterdir())) == 1  # the attempt the first batch stopped is gone


def test_the_date_format_comes_from_the_first_batch_with_a_date(tmp_path):
    dates = [None] * 3 + ["25/02/2011 10:00"]  # every format fits the empty first batch
    lines = generate_transactions(1_000, seed=3).transactions.head(4).with_columns(
        pl.Series("InvoiceDate", dates, dtype=pl.String))
    export = tmp_path / "export.csv"
    lines.write_csv(export)
    staged = stage_transactions(export, tmp_path / "staged", batch_rows=3).transactions.collect()
    assert staged["InvoiceDate"].dt.day().to_list() == [None, None, None, 25]


def test_a_header_only_input_is_refused_when_streamed(tmp_path):
    export = tmp_path / "header.csv"
    generate_transactions(1_000, seed=3).transactions.clear().write_csv(export)
    with pytest.raises(InputError, match=r"header\.csv: there is a header but no rows"):
        stage_transactions(export, tmp_path / "staged")


def test_staging_and_cleaning_read_back_only_their_own_files(tmp_path):
    # As a retried task does: the same folder again, after an earlier attempt with more lines.
    larger, smaller = tmp_path / "larger.parquet", tmp_path / "smaller.parquet"
    generate_transactions(3_000, seed=3).transactions.write_parquet(larger)
    generate_transactions(1_000, seed=3).transactions.write_parquet(smaller)
    for export, batch_rows in ((larger, 500), (smaller, 300)):
        staged = stage_transactions(export, tmp_path / "raw", batch_rows=batch_rows)
        cleaned = clean_in_batches(staged.transactions, tmp_path / "clean", batch_rows=batch_rows)
    assert staged.rows == pl.read_parquet(smaller).height
    assert cleaned.lines.collect().height + cleaned.quarantine.collect().height == staged.rows


@pytest.mark.usefixtures("prefect_server")
def test_streamed_run_publishes_what_the_in_memory_run_publishes(generated, tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    cleaned_in = []  # the work folders the streamed run cleaned in, to know it streamed

    def recording_clean_in_batches(raw, folder, *arguments, **options):
        cleaned_in.append(folder)
        return clean_in_batches(raw, folder, *arguments, **options)

    monkeypatch.setattr(tasks.clean, "clean_in_batches", recording_clean_in_batches)
    export = tmp_path / "export.parquet"
    generated.write_parquet(export)
    runs = {}
    for streaming in (False, True):
        params = SegmentationParameters(input=str(export), target=str(tmp_path / "out"), run_id=f"streaming-{streaming}",
                                        streaming=streaming, stability_resamples=2)
        state = customer_segmentation(params, return_state=True)
        assert state.is_completed(), state.message
        runs[streaming] = tmp_path / "out" / "runs" / f"streaming-{streaming}"
    for name in ("segments.parquet", "quarantine.parquet"):
        assert pl.read_parquet(runs[True] / name).equals(pl.read_parquet(runs[False] / name)), name
    for name in ("quality.json", "profiles.csv"):
        assert (runs[True] / name).read_text() == (runs[False] / name).read_text(), name
    [work_folder] = cleaned_in
    assert work_folder.parent.parent == temporary and not work_folder.parent.exists()  # used, then removed
