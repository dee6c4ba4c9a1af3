"""Stored stage results: what a resumed run reads back is what the stage returned, in a fraction of pickle's space."""

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.serializers import PickleSerializer, Serializer

from flows.results import FramesAsArrowPickle
from tasks.clean import clean_transactions
from tasks.cluster import ClusteringOptions, fit_segments
from tasks.features import build_features
from tasks.generate import generate_transactions
from tasks.ingest import from_generated


@pytest.fixture(scope="module")
def stage_results():
    """The ingest, clean, features and cluster results of a small generated run."""
    loaded = from_generated(generate_transactions(20_000, seed=3), seed=3)
    cleaned = clean_transactions(loaded.transactions)
    features = build_features(cleaned.lines, cleaned.returns)
    return loaded, cleaned, features, fit_segments(features, ClusteringOptions(resamples=2))


def stored_and_read(result: object, serializer: Serializer) -> tuple[bytes, object]:
    """The JSON record Prefect stores for `result`, and the result read back from it in a fresh record."""
    record = ResultRecord(metadata=ResultRecordMetadata(serializer=serializer, storage_key="key"), result=result)
    stored = record.serialize()
    return stored, ResultRecord.deserialize(stored).result


def test_every_stage_result_reads_back_equal(stage_results):
    loaded, cleaned, features, segmentation = stage_results

    _, read_loaded = stored_and_read(loaded, FramesAsArrowPickle())
    _, read_cleaned = stored_and_read(cleaned, FramesAsArrowPickle())
    _, read_features = stored_and_read(features, FramesAsArrowPickle())
    _, read_segmentation = stored_and_read(segmentation, FramesAsArrowPickle())

    assert_frame_equal(read_loaded.transactions, loaded.transactions)
    assert_frame_equal(read_loaded.planted_archetypes, loaded.planted_archetypes)
    assert read_loaded.fingerprint == loaded.fingerprint
    assert_frame_equal(read_cleaned.lines, cleaned.lines)
    assert_frame_equal(read_cleaned.quarantine, cleaned.quarantine)
    assert read_cleaned.funnel == cleaned.funnel
    assert_frame_equal(read_features, features)  # Decimal sums included: the schemas match exactly
    assert_frame_equal(read_segmentation.assignments, segmentation.assignments)
    assert_frame_equal(read_segmentation.profiles, segmentation.profiles)
    np.testing.assert_array_equal(read_segmentation.model.core_points, segmentation.model.core_points)
    assert read_segmentation.model.segment_ids == segmentation.model.segment_ids
    assert read_segmentation.eps_search == segmentation.eps_search


def test_frames_are_stored_compressed(stage_results):
    _, cleaned, _, _ = stage_results

    compact, _ = stored_and_read(cleaned, FramesAsArrowPickle())
    pickled, _ = stored_and_read(cleaned, PickleSerializer())

    assert len(compact) < len(pickled) / 3


def test_the_type_name_a_record_stores_resolves_to_the_serializer():
    assert isinstance(Serializer(type="pickle/arrow-frames"), FramesAsArrowPickle)


def test_frames_outside_dataclasses_are_kept_too():
    frames = {"empty": pl.DataFrame(schema={"a": pl.Int64}), "nested": [pl.DataFrame({"b": ["x", None]})]}

    _, read = stored_and_read(frames, FramesAsArrowPickle())

    assert_frame_equal(read["empty"], frames["empty"])
    assert_frame_equal(read["nested"][0], frames["nested"][0])
