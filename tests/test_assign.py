"""The assign-segments flow: a published model labels the customers of an export."""

import polars as pl
import pytest

from flows.assign import assign_segments
from flows.cli import main
from flows.parameters import AssignmentParameters, SegmentationParameters
from flows.segmentation import customer_segmentation
from tasks.generate import write_generated
from tasks.model import CORE_SAMPLES_FILE, MODEL_FILE, SegmentModel
from tests.core_samples import assert_core_samples_keep_their_labels

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


def test_cli_assign_prints_the_summary(fitted_and_assigned, tmp_path, capsys):
    _, _, target = fitted_and_assigned
    manifest = (target / "runs" / "fit" / "manifest.json").read_text()
    training_input = __import__("json").loads(manifest)["parameters"]["input"]
    exit_code = main(["assign", "--model", str(target / "runs" / "fit"), "--input", training_input,
                      "--target", str(tmp_path), "--run-id", "cli-assign"])
    assert exit_code == 0
    output = capsys.readouterr().out
    assert "Run cli-assign completed." in output and "report" not in output.split("segments file")[1]
