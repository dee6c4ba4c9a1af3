"""The `segments` command line: flags to parameters, the run summary, clear errors, generate."""

import contextlib
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from flows.cli import build_parser, hide_tracebacks_of_own_errors, main, parameters_from
from flows.parameters import SegmentationParameters
from flows.serve import StackError

SEGMENTS = Path(sys.executable).parent / "segments"


def test_flags_become_validated_parameters():
    arguments = build_parser().parse_args([
        "run", "--input", "data.parquet", "--target", "s3://bucket/prefix", "--country", "United Kingdom",
        "--country", "France", "--column-map", "Customer=CustomerID", "--eps", "0.4", "--feature", "Recency",
        "--feature", "Amount", "--min-samples", "6",
    ])
    params = parameters_from(arguments)
    assert params.input == "data.parquet" and params.target == "s3://bucket/prefix"
    assert params.countries == ["United Kingdom", "France"]
    assert params.column_mapping == {"Customer": "CustomerID"}
    assert (params.eps, params.min_samples, params.features) == (0.4, 6, ["Recency", "Amount"])


def test_reproduce_command_round_trips():
    params = SegmentationParameters(input="in.csv", countries=["United Kingdom"], eps=0.3, column_mapping={"a": "b"})
    words = __import__("shlex").split(params.as_command_line("run-1"))
    assert words[:2] == ["segments", "run"]
    again = parameters_from(build_parser().parse_args(words[1:]))
    assert again == params.model_copy(update={"run_id": "run-1"})


def test_a_column_map_splits_at_its_last_equals_sign():
    arguments = build_parser().parse_args(["run", "--column-map", "Customer=Id=CustomerID"])
    assert parameters_from(arguments).column_mapping == {"Customer=Id": "CustomerID"}


def test_a_column_map_without_an_equals_sign_is_rejected(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--column-map", "Customer"])
    assert exited.value.code == 2
    assert "--column-map: expected Source=Canonical, got 'Customer'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--eps", "-1"], "eps"),
        (["--feature", "Shoe size"], "Input should be 'Recency'"),
        (["--run-id", "../escape"], "Invalid run id '../escape'"),
        (["--target", "s3://x"], "not a valid bucket name"),
    ],
)
@pytest.mark.usefixtures("prefect_server")
def test_bad_parameters_are_rejected_before_the_flow_runs(flags, message, capsys):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs_before = client.count_flow_runs()
        assert main(["run", *flags]) == 2
        assert client.count_flow_runs() == runs_before
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error


def test_a_temporary_server_that_fails_to_start_ends_the_run_with_exit_code_1(monkeypatch, tmp_path, capsys):
    @contextlib.contextmanager
    def failing_server():
        def wait_until_healthy():
            raise StackError("the Prefect server exited with code 3 (its output is below)")

        yield wait_until_healthy

    monkeypatch.setattr("flows.cli.api_for_run", failing_server)
    assert main(["run", "--target", str(tmp_path)]) == 1
    assert "error: the Prefect server exited with code 3" in capsys.readouterr().err


def test_hiding_tracebacks_again_adds_no_second_filter():
    import prefect.main  # noqa: F401  (configures Prefect's logging: its loggers get their handlers)

    handlers = [handler for name in ("prefect", "prefect.flow_runs", "prefect.task_runs")
                for handler in logging.getLogger(name).handlers]
    assert handlers
    hide_tracebacks_of_own_errors()
    filters_after_one_call = [list(handler.filters) for handler in handlers]
    hide_tracebacks_of_own_errors()  # as a second main() in the same process does
    assert [list(handler.filters) for handler in handlers] == filters_after_one_call


def test_generate_writes_transactions_and_archetypes(tmp_path, capsys):
    assert main(["generate", "--output", str(tmp_path), "--lines", "3000", "--seed", "3"]) == 0
    transactions = pl.read_parquet(tmp_path / "transactions.parquet")
    archetypes = pl.read_parquet(tmp_path / "archetypes.parquet")
    assert abs(transactions.height - 3000) <= 150
    assert set(transactions["CustomerID"].drop_nulls()) == set(archetypes["CustomerID"])
    assert "transactions.parquet" in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_server")
def test_console_script_runs_a_file_and_prints_the_summary(tmp_path):
    from prefect.settings import PREFECT_API_URL

    assert main(["generate", "--output", str(tmp_path / "in"), "--lines", "20000"]) == 0
    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    finished = subprocess.run(
        [str(SEGMENTS), "run", "--input", str(tmp_path / "in" / "transactions.parquet"), "--target",
         str(tmp_path / "out"), "--run-id", "cli-run", "--country", "United Kingdom"],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    assert "Run cli-run completed." in finished.stdout
    assert "rows quarantined" in finished.stdout
    assert "Temporary Prefect server" not in finished.stdout + finished.stderr  # the configured API served it
    assert (tmp_path / "out" / "runs" / "cli-run" / "report.html").is_file()
    quality = __import__("json").loads((tmp_path / "out" / "runs" / "cli-run" / "quality.json").read_text())
    assert {rule["rule"]: rule["removed_rows"] for rule in quality["rules"]}["country_not_selected"] > 0


@pytest.mark.usefixtures("prefect_server")
def test_console_script_reports_bad_input_without_a_traceback(tmp_path):
    from prefect.settings import PREFECT_API_URL

    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    finished = subprocess.run(
        [str(SEGMENTS), "run", "--input", str(tmp_path / "absent.csv"), "--target", str(tmp_path / "out")],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert finished.returncode == 1
    assert "absent.csv: no such file" in finished.stderr
    assert "Traceback" not in finished.stderr + finished.stdout


@pytest.mark.slow
def test_without_an_api_a_run_records_itself_in_a_temporary_server_it_then_stops(tmp_path):
    home = tmp_path / "prefect-home"
    environment = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    environment["PREFECT_HOME"] = str(home)

    finished = subprocess.run(
        [str(SEGMENTS), "run", "--demo-lines", "20000", "--target", str(tmp_path / "out")],
        capture_output=True, text=True, env=environment, timeout=600,
    )

    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    server = re.search(r"Temporary Prefect server ready at (\S+)", output)
    assert server, output
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server[1]}/health", timeout=5)
    assert "Error logging to API" not in output  # the last logs reached the server before it stopped
    with sqlite3.connect(home / "prefect.db") as database:
        flow_runs = database.execute("SELECT state_name FROM flow_run").fetchall()
        task_runs = database.execute("SELECT state_name, count(*) FROM task_run GROUP BY state_name").fetchall()
    assert flow_runs == [("Completed",)]
    assert task_runs == [("Completed", 6)]


@pytest.mark.slow
def test_a_run_killed_outright_takes_its_temporary_server_with_it(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    environment["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    output = tmp_path / "output.txt"
    with output.open("w") as written, subprocess.Popen(
        [str(SEGMENTS), "run", "--demo-lines", "200000", "--target", str(tmp_path / "out")],
        stdout=written, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
    ) as run:
        try:
            server = found_within(output, r"server ready at (\S+)", seconds=120)
            run.kill()  # SIGKILL, as the OOM killer sends: none of the run's own clean-up happens
            run.wait()
            assert not still_answers_after(f"{server}/health", seconds=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)  # whatever the run left behind, so a failure leaks nothing


def found_within(output: Path, pattern: str, seconds: float) -> str:
    """The pattern's first group once it appears in the output file; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := re.search(pattern, output.read_text())):
        assert time.monotonic() < deadline, f"no {pattern!r} after {seconds} s in:\n{output.read_text()}"
        time.sleep(0.2)
    return found[1]


def still_answers_after(url: str, seconds: float) -> bool:
    """Whether the URL still answers after `seconds` (asked once a second): False as soon as it does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                pass
        except OSError:  # refused, reset or timed out: URLError is an OSError too
            return False
        time.sleep(1)
    return True
