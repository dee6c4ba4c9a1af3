"""The assign-segments flow: a published model labels the customers of an export."""

import json

import polars as pl
import pytest

from flows.assign import assign_segments
from flows.cli import main
from flows.parameters import AssignmentParameters, SegmentationParameters
from flows.segmentation import customer_segmentation
from tasks.generate import write_generated
from tasks.errors import InputError
from tasks.model import CORE_SAMPLES_FILE, MODEL_FILE, SegmentModel, load_model
from tests.core_samples import assert_core_samples_keep_their_labels
from tests.s3_server import moto_s3_server, s3_test_client, use_test_credentials_only

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def fitted_and_assigned(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    transactions, _ = write_generated(data, 20_000, seed=11)
    target = tmp_path_factory.mktemp("artifacts")
    fitted = customer_segmentation(SegmentationParameters(input=str(transactions), target=str(target), run_id="fit"),
                                   return_state=True)
    assigned = assign_segments(
        AssignmentParameters(model=str(target / "runs" / "fit"), input=str(transactions), target=str(target),
                             run_id="assigned"),
        return_state=True,
    )
    return fitted, assigned, target


def test_assigning_the_training_export_reproduces_every_core_sample(fitted_and_assigned):
    fitted, assigned, target = fitted_and_assigned
    assert fitted.is_completed(), fitted.message
    assert assigned.is_completed(), assigned.message
    trained = pl.read_parquet(target / "runs" / "fit" / "segments.parquet")
    relabelled = pl.read_parquet(target / "runs" / "assigned" / "segments.parquet")
    model_dir = target / "runs" / "fit"
    model = SegmentModel.from_files({name: (model_dir / name).read_bytes() for name in (MODEL_FILE, CORE_SAMPLES_FILE)})
    assert relabelled["CustomerID"].sort().equals(trained["CustomerID"].sort())
    assert_core_samples_keep_their_labels(model, trained, trained, relabelled)


def test_assignment_publishes_crm_lists_and_a_manifest(fitted_and_assigned):
    _, assigned, target = fitted_and_assigned
    run = target / "runs" / "assigned"
    assert (run / "manifest.json").is_file() and (run / "segments.csv").is_file()
    exports = sorted(path.name for path in (run / "exports").iterdir())
    names = pl.read_parquet(run / "segments.parquet")["segment_name"].unique()
    assert len(exports) == names.len()
    assert assigned.result().report_url is None


def test_a_missing_model_fails_the_run_before_reading_the_input(tmp_path):
    params = AssignmentParameters(model=str(tmp_path / "nowhere"), input=str(tmp_path / "absent.csv"),
                                  target=str(tmp_path), retry_delay_seconds=0)
    state = assign_segments(params, return_state=True)
    assert state.is_failed()
    assert "model/model.json, model/core_samples.parquet not found" in state.message


def test_a_model_location_no_store_can_be_opened_at_is_refused_before_any_work(tmp_path, capsys):
    assert main(["assign", "--model", "gs://models/runs/fit", "--input", str(tmp_path / "absent.csv"),
                 "--target", str(tmp_path)]) == 2
    assert "Location 'gs://models/runs/fit': unsupported scheme 'gs'" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"^Model: Location 's3://Models/runs/fit': 'Models' is not a valid bucket"):
        load_model("s3://Models/runs/fit")


def test_a_model_in_a_folder_next_to_the_working_one_is_read(fitted_and_assigned, tmp_path, monkeypatch):
    _, _, target = fitted_and_assigned
    training_input = json.loads((target / "runs" / "fit" / "manifest.json").read_text())["parameters"]["input"]
    monkeypatch.chdir(tmp_path)
    assert main(["assign", "--model", f"../{target.name}/runs/fit", "--input", training_input,
                 "--target", "assigned", "--retries", "0"]) == 0


def test_cli_assign_prints_the_summary(fitted_and_assigned, tmp_path, capsys):
    _, _, target = fitted_and_assigned
    manifest = (target / "runs" / "fit" / "manifest.json").read_text()
    training_input = json.loads(manifest)["parameters"]["input"]
    exit_code = main(["assign", "--model", str(target / "runs" / "fit"), "--input", training_input,
                      "--target", str(tmp_path), "--run-id", "cli-assign"])
    assert exit_code == 0
    output = capsys.readouterr().out
    assert "Run cli-assign completed." in output and "report" not in output.split("segments file")[1]


@pytest.mark.slow
def test_an_s3_model_in_a_missing_bucket_fails_the_run_saying_the_model_was_being_read(tmp_path, monkeypatch):
    use_test_credentials_only(monkeypatch)
    with moto_s3_server() as endpoint_url:
        state = assign_segments(AssignmentParameters(
            model="s3://no-such-bucket/runs/fit", input=str(tmp_path / "absent.csv"), target=str(tmp_path),
            s3_endpoint_url=endpoint_url, retries=0,
        ), return_state=True)
    assert state.is_failed()
    assert ("Read from s3://no-such-bucket/runs/fit/model/model.json: bucket 'no-such-bucket' does not exist. "
            "Check the bucket name in the location") in state.message
    assert "Publish to" not in state.message and "creating the bucket" not in state.message


@pytest.mark.slow
def test_an_s3_model_and_input_are_read_through_the_runs_s3_endpoint_parameter(fitted_and_assigned, tmp_path,
                                                                                monkeypatch):
    _, _, target = fitted_and_assigned
    training_input = json.loads((target / "runs" / "fit" / "manifest.json").read_text())["parameters"]["input"]
    use_test_credentials_only(monkeypatch)
    with moto_s3_server() as endpoint_url:
        client = s3_test_client(endpoint_url)
        client.create_bucket(Bucket="segments")
        client.upload_file(training_input, "segments", "exports/lines.parquet")
        for name in (MODEL_FILE, CORE_SAMPLES_FILE):
            client.upload_file(str(target / "runs" / "fit" / name), "segments", f"runs/fit/{name}")
        state = assign_segments(AssignmentParameters(
            model="s3://segments/runs/fit", input="s3://segments/exports/lines.parquet", target=str(tmp_path),
            s3_endpoint_url=endpoint_url, retries=0,
        ), return_state=True)
    assert state.is_completed(), state.message
    assert pl.read_parquet(tmp_path / "runs" / state.result().run_id / "segments.parquet").height > 0
