"""The benchmark harness on a tiny generated export: it runs end to end and its parts do what they say."""

import json
import sys
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from bench.clustering import draw_customers
from bench.flow import parse_log
from bench.inputs import generated_inputs
from bench.measure import run_process
from bench.run import Plan, run_benchmark

TINY_LINES = 3_000


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    return generated_inputs(TINY_LINES, tmp_path_factory.mktemp("bench-data"))


def test_the_benchmark_runs_end_to_end_on_a_tiny_export(tiny_inputs, tmp_path):
    plan = Plan(line_inputs=tuple(tiny_inputs), repeats=1, customer_base=tiny_inputs[0].path,
                customer_counts=(100,), exact_counts=(100,))
    results = run_benchmark(plan, tmp_path)
    assert json.loads((tmp_path / "latest.json").read_text())["pipelines"] == results["pipelines"]
    assert [row["failure"] for row in results["pipelines"]] == [None] * len(results["pipelines"])
    assert all(row["agrees_with_project"] for row in results["pipelines"])
    [default_fit], [exact_fit] = results["clustering"], results["exact_clustering"]
    assert default_fit["customers"] == exact_fit["customers"] == 100
    assert exact_fit["ari_segment_vs_exact"] == 1.0  # 100 customers are under the fit sample: the same fit
    markdown = (tmp_path / "latest.md").read_text()
    assert "ingest → clean → features" in markdown and "clustering stage" in markdown


def test_drawn_customers_are_a_subset_or_the_base_plus_jittered_copies():
    base = pl.DataFrame({"CustomerID": [7, 8], "Recency": [10, 300], "Tenure": [40, 300], "FrequencyPurchase": [2, 1],
                         "Amount": [100.0, 20.0], "AvgOrderValue": [50.0, 20.0]})
    rng = np.random.default_rng(0)
    assert draw_customers(base, 1, rng).height == 1
    grown = draw_customers(base, 50, rng)
    assert grown["CustomerID"].to_list() == list(range(1, 51))
    assert (grown["Recency"] >= 1).all() and (grown["Tenure"] >= grown["Recency"]).all()
    assert (grown["AvgOrderValue"] - grown["Amount"] / grown["FrequencyPurchase"]).abs().max() < 1e-9


def test_a_run_past_the_memory_cap_is_killed_and_reported():
    hog = "x = bytearray(400 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); import time; time.sleep(30)"
    run = run_process([sys.executable, "-c", hog], memory_cap_mb=100)
    assert run.killed_over_mb == 100
    assert run.peak_rss_mb > 100


def test_a_run_is_measured_by_its_own_peak_not_by_the_memory_of_the_process_that_started_it():
    # The kernel's rusage of a process includes the peak of the process that started it.
    starter_memory = b"\x01" * (600 * 1024 * 1024)  # written, so resident
    run = run_process([sys.executable, "-c", "import time; time.sleep(0.5)"], memory_cap_mb=10_000)
    assert 1 < run.peak_rss_mb < 100
    del starter_memory


def test_the_log_splits_a_run_into_start_up_stages_and_overhead():
    log = "\n".join([
        "21:46:03.552 | INFO    | prefect.segments - Temporary Prefect server ready at http://127.0.0.1:8071/api "
        "after 9.73 s, 4.25 s of them waited for it",
        "21:46:03.694 | INFO    | Flow run 'flexible-sloth' - Beginning flow run 'flexible-sloth' for flow 'x'",
        "21:46:04.398 | INFO    | Task run 'ingest-e5f' - stage=ingest seconds=0.61 rows=541909",
        "21:46:04.403 | INFO    | Task run 'ingest-e5f' - Finished in state Completed()",
        "21:46:05.602 | INFO    | Task run 'clean-9e6' - stage=clean seconds=0.54 clean_rows=391150",
        "21:46:18.322 | INFO    | Flow run 'flexible-sloth' - Finished in state Completed()",
    ])
    events = parse_log(log, datetime(2026, 11, 26, 21, 45, 43, 373000))
    assert events.server_wait_seconds == 4.25
    assert events.flow_began == pytest.approx(20.321)
    assert events.flow_finished == pytest.approx(34.949)
    assert events.stages == {"ingest": 0.61, "clean": 0.54}
